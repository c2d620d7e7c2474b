"""True-quantised modules: the integer operations a fake-quantised network becomes.

Each module carries the scales (epsilons) of the values it reads and writes. In the *exact* fake-quantised model the
scales are the real ones, and every tensor holds ``scale * integer``; integerisation sets every scale to 1 (moving the
real ones into ``ScaleTunnel``s at the network's boundary), and the same modules then compute on integers. All
arithmetic runs in float64, which holds every integer below 2**53 exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.graphs.tracing import leaf_module
from quantlib.modules.average_pool import exact_average


def float64_buffer(value: torch.Tensor | float) -> torch.Tensor:
    """A float64 copy of ``value``, to register as a buffer."""
    return torch.as_tensor(value, dtype=torch.float64).clone()


class TrueQuantModule(nn.Module, ABC):
    """An integer op that carries the real scales of its input and output (1 once integerised)."""

    @abstractmethod
    def output_scale(self) -> torch.Tensor:
        """The real value of one integer unit of the output, broadcastable against it."""

    @abstractmethod
    def drop_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Set every scale to 1, so that the module computes on integers; return the factors that must now multiply
        its input (1 / input scale) and its output (output scale) for the values to stay as they were."""


@leaf_module
class ScaleTunnel(nn.Module):
    """Multiplies by a constant ``factor`` (a scale, or its inverse): where real values enter or leave integers."""

    def __init__(self, factor: torch.Tensor | float) -> None:
        super().__init__()
        self.register_buffer("factor", float64_buffer(factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() * self.factor


class InOutScaled(TrueQuantModule):
    """A true-quantised op whose scales are those of its input (``eps_in``) and of its output (``eps_out``)."""

    def output_scale(self) -> torch.Tensor:
        return self.eps_out

    def drop_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        before, after = 1.0 / self.eps_in, self.eps_out.clone()
        self.eps_in, self.eps_out = torch.ones_like(self.eps_in), torch.ones_like(self.eps_out)
        return before, after


@leaf_module
class Requant(InOutScaled):
    """``eps_out * clip(floor((x / eps_in * mul + add) / 2**shift), lo, hi)``: the one integer op that ends every
    layer. ``mul`` and ``add`` are integers (per channel or per tensor), ``shift`` an integer >= 0.

    ``reads_integers``: ``x`` is an integer times ``eps_in`` (an accumulator, a requantised tensor), so ``x / eps_in``
    is rounded to that integer, which float64 arithmetic on scales that are not powers of two leaves a few ulps off."""

    def __init__(self, mul: torch.Tensor, add: torch.Tensor, shift: int, lo: int, hi: int,
                 eps_in: torch.Tensor | float = 1.0, eps_out: torch.Tensor | float = 1.0,
                 reads_integers: bool = False) -> None:
        super().__init__()
        self.reads_integers = reads_integers
        self.register_buffer("mul", float64_buffer(mul))
        self.register_buffer("add", float64_buffer(add))
        self.register_buffer("eps_in", float64_buffer(eps_in))
        self.register_buffer("eps_out", float64_buffer(eps_out))
        self.shift, self.lo, self.hi = int(shift), int(lo), int(hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        integer = x.double() / self.eps_in
        if self.reads_integers:
            integer = torch.round(integer)
        y = torch.floor((integer * self.mul + self.add) / 2.0 ** self.shift).clamp_(self.lo, self.hi)
        return y * self.eps_out

    def extra_repr(self) -> str:
        return f"shift={self.shift}, lo={self.lo}, hi={self.hi}"


class _TrueLinearOp(TrueQuantModule):
    """Integer weights ``weight`` and bias ``bias`` (on the accumulator grid), with the real weight scale ``eps_w``
    (one per output channel) and input scale ``eps_in``: output = eps_in * eps_w * (W x + B), the integer accumulator
    computed first and scaled once, so that it is the integer model's output times the same float64 scale."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, eps_w: torch.Tensor,
                 eps_in: torch.Tensor | float) -> None:
        super().__init__()
        self.register_buffer("weight", float64_buffer(weight))
        self.register_buffer("bias", None if bias is None else float64_buffer(bias))
        self.register_buffer("eps_w", float64_buffer(eps_w).reshape(-1))
        self.register_buffer("eps_in", float64_buffer(eps_in))

    def output_scale(self) -> torch.Tensor:
        return self.eps_in * self.eps_w.reshape(1, -1, *([1] * (self.weight.dim() - 2)))

    def drop_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        before, after = 1.0 / self.eps_in, self.output_scale()
        self.eps_in, self.eps_w = torch.ones_like(self.eps_in), torch.ones_like(self.eps_w)
        return before, after

    def _integer_input(self, x: torch.Tensor) -> torch.Tensor:
        """The integers ``x`` holds (it is a requantised tensor: integers times ``eps_in``, to float64 rounding)."""
        return torch.round(x.double() / self.eps_in)


@leaf_module
class TrueConv2d(_TrueLinearOp):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, eps_w: torch.Tensor,
                 eps_in: torch.Tensor | float, stride, padding, dilation, groups: int) -> None:
        super().__init__(weight, bias, eps_w, eps_in)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = F.conv2d(self._integer_input(x), self.weight, self.bias, self.stride, self.padding, self.dilation,
                       self.groups)
        return acc * self.output_scale()

    def extra_repr(self) -> str:
        return (f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}")


@leaf_module
class TrueLinear(_TrueLinearOp):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._integer_input(x), self.weight, self.bias) * self.output_scale()

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}"


@leaf_module
class TrueAvgPool2d(nn.Module):
    """The integer average ``sum / (kh * kw)`` over each window, exactly (float64, one true division); the floor that
    keeps it an integer is the requantisation that follows. ``kernel_size=None`` averages the whole map."""

    def __init__(self, kernel_size: tuple[int, int] | None, stride: tuple[int, int] | None = None,
                 padding: tuple[int, int] = (0, 0), keepdim: bool = True) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.keepdim = kernel_size, stride, padding, keepdim

    @property
    def window(self) -> int | None:
        """How many values each output averages (None: the whole map)."""
        return None if self.kernel_size is None else self.kernel_size[0] * self.kernel_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = exact_average(x, self.kernel_size, self.stride, self.padding)
        return y if self.keepdim else y.flatten(1)

    def extra_repr(self) -> str:
        return "global" if self.kernel_size is None else f"kernel_size={self.kernel_size}, stride={self.stride}"
