"""A PTQ result with power-of-two scales through the integer path: its exact twin and its integer model, which
agree element for element (and with onnxruntime on the exported integer ONNX)."""

from __future__ import annotations

import torch
import torch.fx as fx

from quantlib.editors.fake2true import integerise, to_exact
from quantlib.editors.fake2true.requant_parameters import is_power_of_two
from quantlib.errors import UnsupportedOpError
from quantlib.layer_overrides import LINEAR_TYPES
from quantlib.modules.qmodule import QModule
from quantlib.scales import quantise_biases
from quantlib.true_quantisation import IntegerFlow


def deploy(gm: fx.GraphModule, example_input: torch.Tensor) -> IntegerFlow:
    """The integer path of a PTQ result made with ``pow2=True``; its biases are put on their accumulators' grids in
    place (the only change to ``gm``)."""
    kept_float = [name for name, m in gm.named_modules() if isinstance(m, LINEAR_TYPES) and not isinstance(m, QModule)]
    if kept_float:
        raise UnsupportedOpError(f"PTQ result has layers kept in float {kept_float} (override keep_float); the "
                                 f"integer path has no float layers: quantise them to deploy.")
    learned_zero = [q.qualname for q in gm.modules() if isinstance(q, QModule) and q.spec.qrange.offset is None]
    if learned_zero:
        raise UnsupportedOpError(f"PTQ result has quantisers with learned zero points ({', '.join(learned_zero[:5])}"
                                 f"{', ...' if len(learned_zero) > 5 else ''}); the integer path takes grids with a "
                                 f"fixed offset: quantise with symmetric=True.")
    off = [q.qualname for q in gm.modules() if isinstance(q, QModule) and not is_power_of_two(q.scale.detach())]
    if off:
        raise UnsupportedOpError(f"PTQ result has scales that are not powers of two ({', '.join(off[:5])}"
                                 f"{', ...' if len(off) > 5 else ''}); the integer path needs them: quantise with "
                                 f"pow2=True.")
    quantise_biases(gm, example_input)
    exact = to_exact(gm, example_input)
    return IntegerFlow(gm, exact, integerise(exact))
