"""A PTQ result through the integer path: its exact twin and its integer model, which agree element for element (and
with onnxruntime on the exported integer ONNX). With power-of-two scales every rescale is a shift and the fake model
agrees exactly too; with float scales each rescale is a 24-bit multiplier and a shift, and the fake model (float32)
may differ from it by one step where a value falls within float32 rounding of a rounding boundary:
``compare_fake_and_exact`` counts those."""

from __future__ import annotations

import torch
import torch.fx as fx

from quantlib.editors.fake2true import integerise, to_exact
from quantlib.errors import UnsupportedOpError
from quantlib.layer_overrides import LINEAR_TYPES
from quantlib.modules.qmodule import QModule
from quantlib.scales import quantise_biases
from quantlib.true_quantisation import IntegerFlow


def deploy(gm: fx.GraphModule, example_input: torch.Tensor) -> IntegerFlow:
    """The integer path of a PTQ result; its biases are put on their accumulators' grids in place (the only change
    to ``gm``)."""
    kept_float = [name for name, m in gm.named_modules() if isinstance(m, LINEAR_TYPES) and not isinstance(m, QModule)]
    if kept_float:
        raise UnsupportedOpError(f"PTQ result has layers kept in float {kept_float} (override keep_float); the "
                                 f"integer path has no float layers: quantise them to deploy.")
    quantise_biases(gm, example_input)
    exact = to_exact(gm, example_input)
    return IntegerFlow(gm, exact, integerise(exact))
