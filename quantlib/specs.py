"""Quantisation specifications: the integer range, the granularity of the scales, and how scales are initialised.

Specs are written by users (in Python or YAML) as small dicts or strings; ``QRange.from_spec``,
``QGranularity.from_spec`` and ``QHParamsInitStrategy.from_spec`` turn them into frozen objects, and raise ValueError
naming the key, the value and what is allowed when a spec is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RANGE_SIZE_KEYS = ("bitwidth", "limpbitwidth", "n_levels")
RANGE_OFFSET_KEYS = ("signed", "offset")


@dataclass(frozen=True)
class QRange:
    """The integers a quantiser may output: ``offset + step * k`` for k in 0 .. n_levels - 1.

    ``offset=None`` means the offset (zero point) is learned from the data.
    """

    n_levels: int
    offset: int | None
    step: int = 1

    @classmethod
    def from_spec(cls, spec: str | dict[str, Any] | QRange) -> QRange:
        """Build from 'binary', 'ternary', or a dict with one of bitwidth / limpbitwidth / n_levels, and optionally one
        of signed / offset (neither: learned offset)."""
        if isinstance(spec, QRange):
            return spec
        if spec == "ternary":
            return cls(n_levels=3, offset=-1)
        if spec == "binary":
            return cls(n_levels=2, offset=-1, step=2)
        if not isinstance(spec, dict):
            raise ValueError(f"QRange spec {spec!r} is not allowed: use 'binary', 'ternary' or a dict with one of "
                             f"{RANGE_SIZE_KEYS} and optionally one of {RANGE_OFFSET_KEYS}.")
        unknown = set(spec) - set(RANGE_SIZE_KEYS) - set(RANGE_OFFSET_KEYS)
        if unknown:
            raise ValueError(f"QRange spec key(s) {sorted(unknown)} are not allowed; allowed keys are "
                             f"{RANGE_SIZE_KEYS + RANGE_OFFSET_KEYS}.")
        sizes = [k for k in RANGE_SIZE_KEYS if k in spec]
        offsets = [k for k in RANGE_OFFSET_KEYS if k in spec]
        if len(sizes) != 1:
            raise ValueError(f"QRange spec {spec!r} must give exactly one of {RANGE_SIZE_KEYS}, got {sizes}.")
        if len(offsets) > 1:
            raise ValueError(f"QRange spec {spec!r} may give at most one of {RANGE_OFFSET_KEYS}, got {offsets}.")
        key = sizes[0]
        value = spec[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < (2 if key == "n_levels" else 1):
            raise ValueError(f"QRange spec key '{key}' has value {value!r}; it must be an integer >= "
                             f"{2 if key == 'n_levels' else 1}.")
        if key == "limpbitwidth" and value < 2:
            raise ValueError(f"QRange spec key 'limpbitwidth' has value {value}; it must be >= 2.")
        n_levels = {"bitwidth": 2 ** value, "limpbitwidth": 2 ** value - 1, "n_levels": value}[key]
        if not offsets:
            return cls(n_levels=n_levels, offset=None)
        if offsets[0] == "offset":
            offset = spec["offset"]
            if not isinstance(offset, int) or isinstance(offset, bool):
                raise ValueError(f"QRange spec key 'offset' has value {offset!r}; it must be an integer.")
            return cls(n_levels=n_levels, offset=offset)
        signed = spec["signed"]
        if not isinstance(signed, bool):
            raise ValueError(f"QRange spec key 'signed' has value {signed!r}; it must be true or false.")
        return cls(n_levels=n_levels, offset=-(n_levels // 2) if signed else 0)

    @property
    def min(self) -> int:
        """The smallest integer level (needs a known offset)."""
        return self._known_offset()

    @property
    def max(self) -> int:
        """The largest integer level (needs a known offset)."""
        return self._known_offset() + self.step * (self.n_levels - 1)

    @property
    def is_signed(self) -> bool:
        return self.offset is not None and self.offset < 0

    @property
    def bits(self) -> int:
        """The number of bits needed to hold one level."""
        return max(1, (self.n_levels - 1).bit_length())

    def _known_offset(self) -> int:
        if self.offset is None:
            raise ValueError("This QRange has a learned offset: its integer bounds are known only after calibration.")
        return self.offset


@dataclass(frozen=True)
class QGranularity:
    """The tensor dimensions along which each slice has its own scale; () is one scale for the whole array."""

    dims: tuple[int, ...] = ()

    @classmethod
    def from_spec(cls, spec: str | tuple[int, ...] | list[int] | QGranularity) -> QGranularity:
        """Build from 'per-array', 'per-outchannel_weights' (dimension 0) or a tuple of dimensions."""
        if isinstance(spec, QGranularity):
            return spec
        if spec == "per-array":
            return cls(())
        if spec == "per-outchannel_weights":
            return cls((0,))
        if isinstance(spec, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) for d in spec):
            if len(set(spec)) != len(spec):
                raise ValueError(f"QGranularity spec {spec!r} repeats a dimension.")
            return cls(tuple(sorted(spec)))
        raise ValueError(f"QGranularity spec {spec!r} is not allowed: use 'per-array', 'per-outchannel_weights' or a "
                         f"tuple of tensor dimensions such as (1,).")


INIT_STRATEGIES: dict[str, dict[str, Any]] = {
    "const": {"a": None, "b": None},
    "minmax": {},
    "meanstd": {"n_std": 3.0},
    "percentile": {"q": 99.99},
    "mse": {},
}
"""Every initialisation strategy with its parameters and their defaults (None: required)."""


@dataclass(frozen=True)
class QHParamsInitStrategy:
    """How the clipping bounds are set from observed statistics: 'const' (a, b), 'minmax', 'meanstd' (n_std),
    'percentile' (q: the upper percentile in %, the lower one is 100 - q) or 'mse' (MSE-optimal clipping)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: str | dict[str, Any] | tuple | QHParamsInitStrategy) -> QHParamsInitStrategy:
        """Build from a name ('minmax'), a (name, {params}) pair, or a dict {'name': ..., **params}."""
        if isinstance(spec, QHParamsInitStrategy):
            return spec
        if isinstance(spec, str):
            name, given = spec, {}
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict):
            name, given = spec
        elif isinstance(spec, dict) and "name" in spec:
            name, given = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        else:
            raise ValueError(f"QHParamsInitStrategy spec {spec!r} is not allowed: use a name from "
                             f"{sorted(INIT_STRATEGIES)}, a (name, {{params}}) pair or {{'name': ..., **params}}.")
        if name not in INIT_STRATEGIES:
            raise ValueError(f"QHParamsInitStrategy name {name!r} is not allowed; allowed: {sorted(INIT_STRATEGIES)}.")
        allowed = INIT_STRATEGIES[name]
        unknown = set(given) - set(allowed)
        if unknown:
            raise ValueError(f"QHParamsInitStrategy '{name}' does not take {sorted(unknown)}; it takes "
                             f"{sorted(allowed) or 'no parameters'}.")
        params = {**allowed, **given}
        missing = [k for k, v in params.items() if v is None]
        if missing:
            raise ValueError(f"QHParamsInitStrategy '{name}' needs {missing}.")
        for key, value in params.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"QHParamsInitStrategy '{name}' key '{key}' has value {value!r}; it must be a number.")
        if name == "const" and not params["a"] < params["b"]:
            raise ValueError(f"QHParamsInitStrategy 'const' needs a < b, got a={params['a']}, b={params['b']}.")
        if name == "meanstd" and params["n_std"] <= 0:
            raise ValueError(f"QHParamsInitStrategy 'meanstd' key 'n_std' has value {params['n_std']}; it must be > 0.")
        if name == "percentile" and not 50 < params["q"] <= 100:
            raise ValueError(f"QHParamsInitStrategy 'percentile' key 'q' has value {params['q']}; it must be in "
                             f"(50, 100].")
        return cls(name, params)


@dataclass(frozen=True)
class QuantiserSpec:
    """Everything that defines one quantiser: range, granularity, initialisation strategy and quantisation op."""

    qrange: QRange
    granularity: QGranularity = QGranularity(())
    init: QHParamsInitStrategy = QHParamsInitStrategy("minmax")
    qop: str = "floor"

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | QuantiserSpec) -> QuantiserSpec:
        """Build from {'qrange': ..., 'granularity': ..., 'init': ..., 'qop': ...}; only 'qrange' is required."""
        if isinstance(spec, QuantiserSpec):
            return spec
        if not isinstance(spec, dict) or "qrange" not in spec:
            raise ValueError(f"Quantiser spec {spec!r} must be a dict with key 'qrange' and optionally 'granularity', "
                             f"'init', 'qop'.")
        unknown = set(spec) - {"qrange", "granularity", "init", "qop"}
        if unknown:
            raise ValueError(f"Quantiser spec key(s) {sorted(unknown)} are not allowed; allowed keys are "
                             f"['qrange', 'granularity', 'init', 'qop'].")
        return cls(qrange=QRange.from_spec(spec["qrange"]),
                   granularity=QGranularity.from_spec(spec.get("granularity", "per-array")),
                   init=QHParamsInitStrategy.from_spec(spec.get("init", "minmax")),
                   qop=spec.get("qop", "floor"))
