"""The PTQ methods by name: adding a method is one class and one line here."""

from __future__ import annotations

from typing import Any

from quantlib.ptq.aciq import Aciq, AciqMix
from quantlib.ptq.adaround import AdaRound
from quantlib.ptq.bias_correction import BiasCorrection
from quantlib.ptq.brecq import Brecq, QDrop
from quantlib.ptq.lapq import Lapq
from quantlib.ptq.method import PTQMethod, describe_params
from quantlib.ptq.rtn import RTN

METHODS: dict[str, type[PTQMethod]] = {
    "rtn": RTN,
    "bias_correction": BiasCorrection,
    "adaround": AdaRound,
    "aciq": Aciq,
    "aciq_mix": AciqMix,
    "lapq": Lapq,
    "brecq": Brecq,
    "qdrop": QDrop,
}


def available_methods() -> list[str]:
    """The names ``get_method`` takes."""
    return list(METHODS)


def get_method(name: str, **params: Any) -> PTQMethod:
    """The method ``name`` with ``params`` (unknown names and parameters are refused, listing the valid ones)."""
    if name not in METHODS:
        raise ValueError(f"Unknown PTQ method {name!r}; available: {available_methods()}.")
    return METHODS[name](**params)


def method_help() -> str:
    """One line per method: its name and parameters with their defaults."""
    return "\n".join(f"{name}: {describe_params(cls.Params) or 'no parameters'}" for name, cls in METHODS.items())
