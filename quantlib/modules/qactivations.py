"""Activation quantisers: ``QIdentity`` (quantise what flows through) and ``QReLU`` (ReLU, then quantise with a
learnable upper clip, PACT-style)."""

from __future__ import annotations

import torch
from torch import nn

from quantlib.graphs.tracing import leaf_module
from quantlib.modules import qops  # noqa: F401 - registers the built-in qops
from quantlib.modules.qmodule import QModule
from quantlib.specs import QuantiserSpec


@leaf_module
class QIdentity(QModule):
    """Fake-quantises its input; in float mode it is the identity."""

    def __init__(self, spec: QuantiserSpec, name: str = "") -> None:
        super().__init__()
        self.init_quantiser(spec, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantise(x)

    def get_output_scale(self, input_scales: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The scale of the output: this quantiser's own."""
        return self.scale.detach()


@leaf_module
class QReLU(QModule):
    """ReLU (or ReLU6 with ``ceiling=6``) followed by a quantiser whose clipping bounds start at the observed range."""

    def __init__(self, spec: QuantiserSpec, name: str = "", ceiling: float | None = None) -> None:
        super().__init__()
        self.ceiling = ceiling
        self.init_quantiser(spec, name)

    @classmethod
    def from_fp_module(cls, module: nn.ReLU | nn.ReLU6, spec: QuantiserSpec, name: str = "") -> QReLU:
        """The quantised counterpart of ``module`` (ReLU6 keeps its ceiling of 6)."""
        return cls(spec, name, ceiling=6.0 if isinstance(module, nn.ReLU6) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.spec.qrange.offset
        if self.is_quantised and not self.is_observing and offset is not None and offset >= 0:
            # an unsigned grid clips at 0: it is the ReLU; only a ceiling (ReLU6) still needs its own clamp
            return self.call_op(x if self.ceiling is None else torch.clamp(x, max=self.ceiling))
        x = torch.relu(x) if self.ceiling is None else torch.clamp(x, 0.0, self.ceiling)
        return self.quantise(x)

    def get_output_scale(self, input_scales: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The scale of the output: this quantiser's own."""
        return self.scale.detach()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ceiling={self.ceiling}" if self.ceiling is not None else super().extra_repr()
