"""The analog convolution as integer arithmetic: per tile of input channels, the integer partial sum goes through
the ADC, ``clip(floor(partial * mul / 2**shift), -32, 31)``; the converted tiles are summed and the bias added.
Like every true-quantised module it carries the real scales of its input and output (1 once integerised)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from quantlib.graphs.tracing import leaf_module
from quantlib.modules.true_quant import InOutScaled, float64_buffer

ADC_LO, ADC_HI = -32, 31


@leaf_module
class TrueAnalogConv2d(InOutScaled):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, tiles: list[tuple[int, int]],
                 adc_mul: torch.Tensor, adc_shift: int, eps_in: torch.Tensor, eps_out: torch.Tensor,
                 stride, padding) -> None:
        super().__init__()
        self.register_buffer("weight", float64_buffer(weight))
        self.register_buffer("bias", None if bias is None else float64_buffer(bias))
        self.register_buffer("adc_mul", float64_buffer(adc_mul))
        self.register_buffer("eps_in", float64_buffer(eps_in))
        self.register_buffer("eps_out", float64_buffer(eps_out))
        self.tiles, self.adc_shift, self.stride, self.padding = list(tiles), int(adc_shift), stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        integers = x.double() / self.eps_in
        total = None
        for start, stop in self.tiles:
            partial = F.conv2d(integers[:, start:stop], self.weight[:, start:stop], None, self.stride, self.padding)
            converted = torch.floor(partial * self.adc_mul / 2.0 ** self.adc_shift).clamp_(ADC_LO, ADC_HI)
            total = converted if total is None else total + converted
        if self.bias is not None:
            total = total + self.bias.reshape(1, -1, 1, 1)
        return total * self.eps_out

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, tiles={len(self.tiles)}, adc_shift={self.adc_shift}"
