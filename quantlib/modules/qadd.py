"""``QHarmonisedAdd``: an addition of quantised tensors that share one scale.

Integer hardware adds integers, so every operand must sit on the same grid. Each input has its own quantiser; after
calibration ``harmonise_scales`` (quantlib/scale_ties.py) puts all of them, and the quantisers whose integers reach the
add unchanged, on one scale, and the sum is quantised again by the output quantiser.
"""

from __future__ import annotations

import torch
from torch import nn

from quantlib.graphs.tracing import leaf_module
from quantlib.modules.qactivations import QIdentity
from quantlib.specs import QuantiserSpec


@leaf_module
class QHarmonisedAdd(nn.Module):
    """``out_q(in_q[0](x0) + in_q[1](x1) + ...)`` with harmonised input scales."""

    def __init__(self, n_inputs: int, input_spec: QuantiserSpec, output_spec: QuantiserSpec, name: str = "") -> None:
        super().__init__()
        if n_inputs < 2:
            raise ValueError(f"QHarmonisedAdd '{name}' needs at least 2 inputs, got {n_inputs}.")
        self.qualname = name or type(self).__name__
        self.input_quantisers = nn.ModuleList(QIdentity(input_spec, f"{self.qualname}.input_quantisers.{i}")
                                              for i in range(n_inputs))
        self.output_quantiser = QIdentity(output_spec, f"{self.qualname}.output_quantiser")

    @property
    def n_inputs(self) -> int:
        return len(self.input_quantisers)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != self.n_inputs:
            raise ValueError(f"QHarmonisedAdd '{self.qualname}' takes {self.n_inputs} inputs, got {len(inputs)}.")
        total = self.input_quantisers[0](inputs[0])
        for quantiser, x in zip(self.input_quantisers[1:], inputs[1:], strict=True):
            total = total + quantiser(x)
        return self.output_quantiser(total)

    def get_output_scale(self, input_scales: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The scale of the output: the output quantiser's."""
        return self.output_quantiser.scale.detach()
