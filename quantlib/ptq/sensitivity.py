"""Per-layer sensitivity: the accuracy of the model with only one layer quantised (its weights and its input), for
each layer, sorted by the drop from float, so that a user knows which layers to keep at 8 bits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from quantlib.ptq.capture import float_mode
from quantlib.ptq.options import PTQOptions
from quantlib.ptq.registry import get_method
from quantlib.quantised_layers import quantised_layers
from quantlib.training import accuracy


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's accuracy (%) when it alone is quantised, and the drop from the float accuracy (points)."""

    layer: str
    accuracy: float
    drop: float


def sensitivity(model: nn.Module, calibration_data: Iterable, test_data: Iterable, method: str = "rtn",
                options: PTQOptions | None = None, **params) -> list[LayerSensitivity]:
    """Quantise ``model`` with ``method`` and ``options`` (default: 4 bits, every layer, head and stem included),
    then measure top-1 accuracy on ``test_data`` with one layer at a time as the method left it (its weights and its
    input quantised), the rest float; most sensitive first."""
    options = options or PTQOptions(keep_head_stem_8bit=False)
    gm = get_method(method, **params).quantize(model, calibration_data, options)
    test_data = list(test_data)
    with float_mode(gm):
        reference = accuracy(gm, test_data)
    rows = []
    for layer in quantised_layers(gm):
        chosen = [layer.module] + ([layer.input_quantiser] if layer.input_quantiser is not None else [])
        with float_mode(gm, keep=chosen):  # the layer as the method left it, everything else float
            rows.append(LayerSensitivity(layer.name, accuracy(gm, test_data), 0.0))
    return sorted((LayerSensitivity(r.layer, r.accuracy, reference - r.accuracy) for r in rows),
                  key=lambda r: -r.drop)
