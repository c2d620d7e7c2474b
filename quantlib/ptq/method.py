"""The interface every post-training quantisation method has: a name, typed parameters with defaults, and
``quantize(model, calibration_data, options) -> fake-quantised GraphModule`` (the float model untouched).

A method works on a ``Scope`` (``quantlib.ptq.scope``): the whole network, or, with per-layer ``method`` overrides,
its share of it."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import torch.fx as fx
from torch import nn

from quantlib.layer_overrides import LayerOverride, key_text
from quantlib.ptq.options import PTQOptions
from quantlib.ptq.prepare import prepare
from quantlib.ptq.scope import Scope, method_scopes
from quantlib.scales import clip_scales_pow2
from quantlib.specs import QHParamsInitStrategy


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A method without parameters of its own."""


class PTQMethod(ABC):
    """A PTQ method: ``Params`` is a frozen dataclass of its typed parameters and their defaults."""

    name: ClassVar[str]
    Params: ClassVar[type] = NoParams
    symmetric_only: ClassVar[bool] = False  # its clip search is defined for ranges symmetric about or starting at 0

    def __init__(self, **params: Any) -> None:
        self.params = build_params(self.name, self.Params, params)

    def initial_ranges(self) -> QHParamsInitStrategy:
        """How the quantisers' ranges are set from the calibration data before the method refines them."""
        return QHParamsInitStrategy("minmax")

    def quantize(self, model: nn.Module, calibration_data: Iterable,
                 options: PTQOptions | None = None) -> fx.GraphModule:
        """The fake-quantised copy of ``model`` after this method, calibrated on ``calibration_data`` (tensors or
        (input, target) pairs)."""
        from quantlib.ptq import registry  # the registry imports every method, and so this module

        options = options or PTQOptions()
        self.check(options)
        batches = list(calibration_data)
        gm, resolved = prepare(model, batches, options, init=self.initial_ranges())
        scopes = method_scopes(gm, resolved, self)
        work = [(registry.get_method(method) if isinstance(method, str) else method, scope)
                for method, scope in scopes.items()]
        for method, scope in work:
            method.set_ranges(gm, batches, options, scope)
        if options.pow2:
            clip_scales_pow2(gm)
        for method, scope in work:
            method.refine(gm, batches, options, scope)
        return gm

    def check(self, options: PTQOptions) -> None:
        """Refuse, before any work, ``options`` that this method or a method of the overrides cannot take."""
        from quantlib.ptq import registry  # the registry imports every method, and so this module

        chosen: dict[str | PTQMethod, str] = {self: "the network-wide method"}
        for key, value in (options.overrides or {}).items():
            method = LayerOverride.from_value(value, key).method
            if isinstance(method, str) and method not in registry.available_methods():
                raise ValueError(f"Override {key_text(key)}: method {method!r} is not a PTQ method; available: "
                                 f"{registry.available_methods()}.")
            if method is not None and not isinstance(method, (str, PTQMethod)):
                raise ValueError(f"Override {key_text(key)}: method={method!r} must be a PTQ method name or a "
                                 f"method from quantlib.ptq.get_method.")
            if method is not None:
                chosen.setdefault(method, f"override {key_text(key)}")
        for method, where in chosen.items():
            kind = registry.METHODS[method] if isinstance(method, str) else method
            if not options.symmetric and kind.symmetric_only:
                raise ValueError(f"PTQ method '{kind.name}' ({where}) fits clipping ranges symmetric about zero or "
                                 f"starting at zero, as its paper does; it does not take symmetric=False.")
            if not isinstance(method, str) and method is not self:
                method.check_own(options)
        self.check_own(options)

    def check_own(self, options: PTQOptions) -> None:
        """Refuse ``options`` this method's parameters cannot work with; by default it takes all."""

    def set_ranges(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        """Replace the calibrated ranges of ``scope`` (before any power-of-two mapping); by default they stay."""

    @abstractmethod
    def refine(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        """Improve the fake-quantised ``gm`` in ``scope``, its ranges final, in place."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in dataclasses.asdict(self.params).items())})"


def build_params(method: str, params_type: type, given: dict[str, Any]) -> Any:
    """``params_type(**given)``, refusing unknown names and values of the wrong type with the valid ones listed."""
    fields = {f.name: f for f in dataclasses.fields(params_type)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ValueError(f"PTQ method '{method}' has no parameter(s) {unknown}; its parameters are "
                         f"{describe_params(params_type) or 'none'}.")
    for name, value in given.items():
        default = fields[name].default
        expected = type(default)
        ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ValueError(f"PTQ method '{method}' parameter {name}={value!r} must be a {expected.__name__} "
                             f"(default {default!r}).")
    params = params_type(**{k: float(v) if type(fields[k].default) is float else v for k, v in given.items()})
    check = getattr(params, "check", None)
    if check is not None:
        problem = check()
        if problem:
            raise ValueError(f"PTQ method '{method}': {problem}")
    return params


def describe_params(params_type: type) -> str:
    """``name: type = default`` for each parameter."""
    return ", ".join(f"{f.name}: {type(f.default).__name__} = {f.default!r}" for f in dataclasses.fields(params_type))
