"""``AveragePool2d``: average pooling as integer hardware computes it, ``floor(sum / (kh * kw))`` on the grid of its
input (docs/diana-numerics.md).

Canonicalisation turns every spelling of an average pool into this module (``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``
with windows of one size, ``F.avg_pool2d``, ``F.adaptive_avg_pool2d``, ``x.mean((2, 3))``). It computes the mean
exactly (a float64 sum and one true division, never a multiplication by 1 / n, so an integer mean is never a hair
below itself). Once ``scale`` is set (``harmonise_scales`` ties it to the scale of the pool's input) it floors the mean
on that grid, straight-through for gradients: the output is on the input's grid and inside its range, so it needs no
requantisation of its own. With an empty ``scale`` it is the plain average.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.errors import UnsupportedOpError
from quantlib.graphs.tracing import leaf_module
from quantlib.modules.saved_shapes import resize_buffers_to_saved

Pair = tuple[int, int]


def pair(v: int | tuple[int, ...]) -> Pair:
    """A kernel / stride / padding argument as a pair."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def exact_average(x: torch.Tensor, kernel: Pair | None, stride: Pair, padding: Pair) -> torch.Tensor:
    """The mean over each window (``kernel`` None: over the whole map, keeping the dimensions), in float64, as
    ``sum / (kh * kw)`` with padded zeros counted."""
    x = x.double()
    if kernel is None:
        return x.sum(dim=(2, 3), keepdim=True) / (x.shape[2] * x.shape[3])
    total = F.avg_pool2d(x, kernel, stride, padding, count_include_pad=True, divisor_override=1)
    return total / (kernel[0] * kernel[1])


@leaf_module
class AveragePool2d(nn.Module):
    """Average pooling over ``kernel_size`` windows, or over the whole map (``kernel_size=None``, the output
    [N, C, 1, 1], or [N, C] without ``keepdim``), or to ``output_size`` (windows derived from the input)."""

    def __init__(self, kernel_size: int | Pair | None = None, stride: int | Pair | None = None,
                 padding: int | Pair = 0, *, keepdim: bool = True, output_size: Pair | None = None,
                 name: str = "") -> None:
        super().__init__()
        self.kernel_size = None if kernel_size is None else pair(kernel_size)
        self.stride = pair(stride) if stride is not None else self.kernel_size
        self.padding = pair(padding)
        self.keepdim = keepdim
        self.output_size = output_size
        self.qualname = name or type(self).__name__
        self.register_buffer("scale", torch.empty(0))

    @classmethod
    def from_torch(cls, pool: nn.AvgPool2d | nn.AdaptiveAvgPool2d, name: str = "") -> AveragePool2d | None:
        """The AveragePool2d computing what ``pool`` computes, or None when ``pool`` divides its windows by
        different counts (ceil_mode, padding left out of the count, a divisor override)."""
        if isinstance(pool, nn.AdaptiveAvgPool2d):
            out = pair(pool.output_size)
            return cls(name=name) if out == (1, 1) else cls(output_size=out, name=name)
        uneven = pool.ceil_mode or pool.divisor_override is not None or (
            not pool.count_include_pad and pair(pool.padding) != (0, 0))
        return None if uneven else cls(pool.kernel_size, pool.stride, pool.padding, name=name)

    @property
    def is_global(self) -> bool:
        return self.kernel_size is None and self.output_size is None

    def window(self, height: int, width: int) -> tuple[Pair | None, Pair | None]:
        """The pooling window and stride for an input of ``height`` x ``width`` (None: global)."""
        if self.output_size is None:
            return self.kernel_size, self.stride
        out_h, out_w = (height if o is None else o for o in self.output_size)
        if height % out_h or width % out_w:
            raise UnsupportedOpError(f"Average pool '{self.qualname}' maps {height}x{width} to {out_h}x{out_w}: its "
                                     f"windows differ in size, and integer hardware divides every window by one "
                                     f"count. Use an output size that divides the input size.")
        kernel = (height // out_h, width // out_w)
        return kernel, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = self.window(x.shape[2], x.shape[3])
        mean = exact_average(x, *window, self.padding)
        if self.scale.numel():  # x is on this grid: its integers, rounded out of float32, are averaged exactly
            scale = self.scale.double()
            floored = torch.floor(exact_average(torch.round(x.double() / scale), *window, self.padding)) * scale
            mean = floored.detach() + (mean - mean.detach())
        y = mean.to(x.dtype)
        return y if self.keepdim or not self.is_global else y.flatten(1)

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        resize_buffers_to_saved(self, state_dict, prefix, ("scale",))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        if self.is_global:
            return f"global, keepdim={self.keepdim}"
        if self.output_size is not None:
            return f"output_size={self.output_size}"
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
