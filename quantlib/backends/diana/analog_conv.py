"""The analog in-memory core's convolution, fake-quantised: ternary weights, input channels in tiles of
floor(1152 / (kh * kw)) (the array's rows), one 6-bit ADC conversion per tile, tiles accumulated digitally.

Noise-aware training: with ``noise_sigma > 0`` and in training mode, Gaussian noise of standard deviation
``noise_sigma`` x (the ADC's full scale) is added to each tile's partial sum before the ADC. It is never added in
eval mode, so exports and exactness checks never see it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.graphs.tracing import leaf_module
from quantlib.modules.qactivations import QIdentity
from quantlib.modules.qlinear import QConv2d, quantised_bias, with_weights_of
from quantlib.specs import QuantiserSpec

ARRAY_ROWS = 1152
ADC_SPEC = QuantiserSpec.from_spec({"qrange": {"bitwidth": 6, "signed": True}, "qop": "floor", "init": "mse"})
TERNARY_SPEC = QuantiserSpec.from_spec({"qrange": "ternary", "qop": "ternary", "init": "mse"})
"""MSE-optimal initial clipping: min-max would put a ternary threshold at half the largest weight (most weights 0)."""


def tile_channels(kernel_size: tuple[int, int]) -> int:
    """How many input channels one pass of the 1152-row array holds for a ``kernel_size`` kernel."""
    return ARRAY_ROWS // (kernel_size[0] * kernel_size[1])


@leaf_module
class AnalogConv2d(QConv2d):
    """A dense Conv2d on the analog core: ternary weights, per-tile 6-bit ADC (``adc``), tiles summed."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = False, *,
                 spec: QuantiserSpec = TERNARY_SPEC, adc_spec: QuantiserSpec = ADC_SPEC, name: str = "",
                 noise_sigma: float = 0.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, 1, 1, bias, spec=spec, name=name)
        self.adc = QIdentity(adc_spec, f"{self.qualname}.adc")
        self.noise_sigma = noise_sigma

    @classmethod
    def from_fp_module(cls, conv: nn.Conv2d, spec: QuantiserSpec = TERNARY_SPEC, name: str = "",
                       adc_spec: QuantiserSpec = ADC_SPEC) -> AnalogConv2d:
        """An AnalogConv2d with ``conv``'s geometry and weights (``conv`` must have groups = 1 and dilation 1)."""
        if conv.groups != 1 or conv.dilation not in (1, (1, 1)):
            raise ValueError(f"Layer '{name}' cannot run on the analog core: groups={conv.groups}, "
                             f"dilation={conv.dilation}; it needs groups=1 and dilation=1.")
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.bias is not None, spec=spec, adc_spec=adc_spec, name=name)
        return with_weights_of(q, conv)

    @property
    def tile_size(self) -> int:
        return tile_channels(self.kernel_size)

    def tiles(self) -> list[tuple[int, int]]:
        """The [start, stop) input-channel range of every tile."""
        size = self.tile_size
        return [(s, min(s + size, self.in_channels)) for s in range(0, self.in_channels, size)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.quantise(self.weight)
        if not (self.is_quantised or self.adc.is_observing or self.adc.is_quantised):
            return self._conv_forward(x, weight, self.bias)
        total = None
        for start, stop in self.tiles():
            partial = F.conv2d(x[:, start:stop], weight[:, start:stop], None, self.stride, self.padding)
            if self.training and self.noise_sigma > 0 and self.adc.is_quantised:
                full_scale = self.adc.scale.detach() * self.adc.n_levels
                partial = partial + torch.randn_like(partial) * (self.noise_sigma * full_scale)
            converted = self.adc(partial)
            total = converted if total is None else total + converted
        bias = quantised_bias(self)
        return total if bias is None else total + bias.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tiles={len(self.tiles())}x{self.tile_size}, noise_sigma={self.noise_sigma}"
