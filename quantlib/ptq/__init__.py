"""Post-training quantisation: a trained float model and calibration data in, a low-bit fake-quantised model out,
by one of several methods behind one interface (``available_methods()``, ``get_method(name, **params)``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch.fx as fx
from torch import nn

from quantlib.layer_overrides import Overrides
from quantlib.ptq.deploy import deploy
from quantlib.ptq.method import PTQMethod
from quantlib.ptq.options import PTQOptions
from quantlib.ptq.registry import available_methods, get_method


def quantize(model: nn.Module, calibration_data: Iterable, method: str = "adaround", w_bits: int = 4,
             a_bits: int = 4, per_channel: bool = True, keep_head_stem_8bit: bool = True, pow2: bool = False,
             symmetric: bool = True, overrides: Overrides | None = None, **params: Any) -> fx.GraphModule:
    """``model`` quantised by ``method`` (its ``params``) with the shared options and per-layer ``overrides``
    (``quantlib.layer_overrides``); ``model`` is left untouched."""
    options = PTQOptions(w_bits, a_bits, per_channel, keep_head_stem_8bit, pow2, symmetric, overrides)
    return get_method(method, **params).quantize(model, calibration_data, options)


__all__ = ["PTQMethod", "PTQOptions", "available_methods", "deploy", "get_method", "quantize"]
