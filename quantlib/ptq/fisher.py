"""BRECQ's diagonal Fisher weights of a unit's output (Li et al. 2021, eq. 10, as the reference computes them): the
gradient of ``KL(softmax(float logits) || softmax(quantised logits))`` (mean over mini-batches of ``batch_size``)
with respect to the unit's output, in the model quantised up to and including the unit and float after it; the
reconstruction loss then weights each squared output error by ``(|gradient| + 1)^2`` (the reference's damping 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F

from quantlib.calibration import model_inputs
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import QModule
from quantlib.ptq.capture import float_mode
from quantlib.ptq.units import Unit

DAMPING = 1.0
"""Added to every |gradient| (the reference's ``damping``), so that no output element is ignored."""


class _SinkGradient(fx.Interpreter):
    """Runs the graph with the value of ``sink`` made a leaf that requires a gradient."""

    def __init__(self, gm: fx.GraphModule, sink: fx.Node) -> None:
        super().__init__(gm)
        self.sink = sink
        self.value: torch.Tensor | None = None

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        if n is self.sink:
            self.value = result.detach().requires_grad_(True)
            return self.value
        return result


def fisher_weights(gm: fx.GraphModule, unit: Unit, batches: Sequence, batch_size: int, activations: bool
                   ) -> torch.Tensor:
    """``|dKL / d(unit output)| + 1`` per calibration sample (the module doc), concatenated along the batch; the
    unit's and earlier layers keep their current weights, and their activation quantisers too if ``activations``."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    modules = dict(gm.named_modules())
    up_to_unit = [modules[n.target] for n in gm.graph.nodes if n.op == "call_module" and order[n] <= order[unit.sink]
                  and isinstance(modules[n.target], QModule)]
    keep = [m for m in up_to_unit if activations or isinstance(m, (QConv2d, QLinear))]
    gradients = []
    for batch in batches:
        inputs = model_inputs(gm, batch)
        for start in range(0, inputs[0].shape[0], batch_size):
            part = tuple(x[start:start + batch_size] for x in inputs)
            with torch.no_grad(), float_mode(gm):
                target = F.softmax(_logits(gm(*part), unit), dim=1)
            interpreter = _SinkGradient(gm, unit.sink)
            with torch.enable_grad(), float_mode(gm, keep=keep):
                logits = _logits(interpreter.run(*part), unit)
                loss = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")
                (gradient,) = torch.autograd.grad(loss, interpreter.value)
            gradients.append(gradient.abs() + DAMPING)
    return torch.cat(gradients)


def _logits(output: object, unit: Unit) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        raise ValueError(f"BRECQ's loss='fisher_diag' needs a model that returns one [N, classes] tensor of logits "
                         f"(reconstructing unit '{unit.name}'); use loss='mse' for this model.")
    return output
