"""``QModule``: the state and behaviour every quantised module shares (the public base class of quantised modules).

A quantised module holds a learnable upper clipping bound ``clip_hi`` (one per slice of its granularity) and, when its
range's offset is learned, a lower one ``clip_lo``; with a fixed offset the lower bound follows from the upper one, so
the grid always holds the range's integers exactly. The scale is ``(clip_hi - lower) / (step * (n_levels - 1))``.
It has two switches:
``is_observing`` (feed the tensors it quantises to an observer) and ``is_quantised`` (fake-quantise them). How a tensor
is quantised is a registered *qop*: a function ``(module, x) -> x_q``; ``register_qop`` adds a new one without
touching this file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from quantlib.errors import CalibrationError
from quantlib.observers.tensor_observer import TensorObserver
from quantlib.specs import QuantiserSpec

logger = logging.getLogger(__name__)

QOp = Callable[["QModule", torch.Tensor], torch.Tensor]
_QOPS: dict[str, QOp] = {}
_ROUNDING_TO_NEAREST: set[str] = set()  # the qops that round to nearest (the others floor)


class QModule(nn.Module):
    """Mixin base of every quantised module; subclasses call ``init_quantiser`` in their constructor."""

    RESIZABLE_STATE: tuple[str, ...] = ("clip_lo", "clip_hi")
    """Parameters and buffers whose shape is set at initialisation (per-channel), so loading may resize them."""

    def init_quantiser(self, spec: QuantiserSpec, name: str = "") -> None:
        """Set up the quantiser state from ``spec``; ``name`` is the module's path in the model, used in messages."""
        if spec.qop not in _QOPS:
            raise ValueError(f"Quantiser op {spec.qop!r} of module '{name}' is not registered; registered ops: "
                             f"{sorted(_QOPS)}.")
        qrange = spec.qrange
        if qrange.offset is not None and qrange.max <= 0:
            raise ValueError(f"Module '{name}': a range with a fixed offset must have a positive largest level, got "
                             f"[{qrange.min}, {qrange.max}].")
        self.spec = spec
        self.qualname = name or type(self).__name__
        self.clip_hi = nn.Parameter(torch.tensor(1.0))
        if qrange.offset is None:
            self.clip_lo = nn.Parameter(torch.tensor(-1.0))
        self.is_observing = False
        self.is_quantised = False
        self.calibrated_on_zeros = False  # the last calibration saw nothing its grid could cover
        self.observer: TensorObserver | None = None

    # -- the plug-in point for quantisation ops ---------------------------------------------------------------
    @staticmethod
    def register_qop(name: str, qop: QOp, rounds_to_nearest: bool = False) -> None:
        """Make ``qop`` available to every quantised module under ``name``; ``rounds_to_nearest`` tells calibration's
        'mse' strategy how it rounds (else: it floors)."""
        _QOPS[name] = qop
        if rounds_to_nearest:
            _ROUNDING_TO_NEAREST.add(name)

    def call_op(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantise ``x`` with this module's qop."""
        return _QOPS[self.spec.qop](self, x)

    # -- derived quantities -------------------------------------------------------------------------------------
    @property
    def n_levels(self) -> int:
        return self.spec.qrange.n_levels

    @property
    def step(self) -> int:
        return self.spec.qrange.step

    @property
    def lower(self) -> torch.Tensor:
        """The lower clipping bound: learned, or ``offset * scale`` for a fixed offset (0 for unsigned ranges)."""
        qrange = self.spec.qrange
        if qrange.offset is None:
            return self.clip_lo
        if qrange.min == 0:
            return torch.zeros((), dtype=self.clip_hi.dtype, device=self.clip_hi.device)
        return self.clip_hi * (qrange.min / qrange.max)

    @property
    def scale(self) -> torch.Tensor:
        """The real value of one integer unit (epsilon), per slice."""
        qrange = self.spec.qrange
        if qrange.offset is not None:
            return self.clip_hi / qrange.max
        return (self.clip_hi - self.clip_lo) / (self.step * (self.n_levels - 1))

    @property
    def zero(self) -> torch.Tensor:
        """The smallest integer level, per slice (the range's offset, or the learned one)."""
        if self.spec.qrange.offset is not None:
            return torch.full_like(self.clip_hi.detach(), float(self.spec.qrange.offset))
        return torch.round(self.clip_lo.detach() / self.scale.detach())

    # -- calibration ----------------------------------------------------------------------------------------------
    def start_observing(self) -> None:
        """Collect statistics of the tensors this module quantises, from now on (any earlier ones are dropped)."""
        self.observer = TensorObserver(self.spec.granularity.dims, self.spec.init, self.qualname)
        self.is_observing = True

    def stop_observing(self) -> None:
        self.is_observing = False

    def init_qhparams(self) -> None:
        """Set the clipping bounds from the observed statistics with the spec's strategy; switch quantisation on."""
        if self.observer is None:
            raise CalibrationError(f"Module '{self.qualname}' was never observing: call start_observing() and run "
                                   f"calibration data through the model before init_qhparams().")
        a, b = self.observer.clip_bounds(self.spec.qrange, nearest=self.spec.qop in _ROUNDING_TO_NEAREST)
        self.calibrated_on_zeros = False
        self.set_clip_bounds(a, b)
        self.is_quantised = True

    def set_clip_bounds(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Set the clipping bounds to the quantisation grid that covers [a, b] (per slice) with this module's range."""
        qrange = self.spec.qrange
        if qrange.offset is None:  # learned offset: the grid spans [a, b] widened to hold 0 (exact zero padding, as
            a, b = torch.clamp(a, max=0.0), torch.clamp(b, min=0.0)  # integer kernels with a zero point need)
            scale = self._nonzero((b - a) / (qrange.step * (qrange.n_levels - 1)))
            self.set_scale(scale, zero=torch.round(a / scale))
        else:
            scale = b / qrange.max
            if qrange.min < 0:
                scale = torch.maximum(scale, a / qrange.min)
            self.set_scale(self._nonzero(scale))

    def _nonzero(self, scale: torch.Tensor) -> torch.Tensor:
        """Slices whose observed range gives no positive scale (a dead ReLU saw only zeros) get scale 1: a tiny one
        would overflow the integers of the layers that read it. The module remembers it (``calibrated_on_zeros``)."""
        dead = scale <= 0
        if bool(dead.any()):
            seen = self.observer.statistics.count if self.observer is not None else 0
            self.calibrated_on_zeros = True
            logger.warning("Quantiser '%s': %d of its %d slices saw only zeros (or only values its range excludes) in "
                           "the %d calibration values it observed; their scale is set to 1, and what depends on it "
                           "(shifts, findings) comes from degenerate data. Calibrate on inputs that reach this layer.",
                           self.qualname, int(dead.sum()), dead.numel(), seen)
        return torch.where(dead, torch.ones_like(scale), scale)

    def set_scale(self, scale: torch.Tensor, zero: torch.Tensor | None = None) -> None:
        """Put the grid on ``scale`` (per slice); a learned-offset grid starts at ``zero`` (default: the current)."""
        qrange = self.spec.qrange
        if qrange.offset is not None:
            self._replace_parameter("clip_hi", qrange.max * scale)
            return
        clip_lo = (self.zero if zero is None else zero) * scale
        self._replace_parameter("clip_lo", clip_lo)
        self._replace_parameter("clip_hi", clip_lo + scale * (self.step * (self.n_levels - 1)))

    def _replace_parameter(self, name: str, value: torch.Tensor) -> None:
        old = getattr(self, name)
        if old.shape == value.shape:
            with torch.no_grad():
                old.copy_(value)
        else:
            setattr(self, name, nn.Parameter(value.detach().clone().to(old.dtype), requires_grad=old.requires_grad))

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        """Observe ``x`` if observing; return it fake-quantised if quantised, unchanged otherwise."""
        if self.is_observing:
            self.observer.update(x)
        return self.call_op(x) if self.is_quantised else x

    # -- state ----------------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"is_quantised": self.is_quantised, "calibrated_on_zeros": self.calibrated_on_zeros}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.is_quantised = bool(state["is_quantised"])
        self.calibrated_on_zeros = bool(state.get("calibrated_on_zeros", False))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        for name in self.RESIZABLE_STATE:
            key = prefix + name
            if key in state_dict and hasattr(self, name) and state_dict[key].shape != getattr(self, name).shape:
                if name in self._buffers:
                    self._buffers[name] = torch.zeros_like(state_dict[key])
                else:
                    self._replace_parameter(name, torch.zeros_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        q = self.spec.qrange
        return (f"{super().extra_repr()}{', ' if super().extra_repr() else ''}n_levels={q.n_levels}, "
                f"offset={q.offset}, qop={self.spec.qop!r}, quantised={self.is_quantised}")
