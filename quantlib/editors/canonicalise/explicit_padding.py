"""Convolutions with ``padding="same"`` or ``"valid"`` get the numbers those words stand for, where they are
symmetric: ``valid`` is 0; ``same`` (stride 1) is ``dilation * (kernel // 2)`` per side for odd kernels. An even
kernel's ``same`` pads unevenly and stays as it is (integer export then refuses it, naming the layer)."""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, RewriteRule
from quantlib.editors.patterns import ModuleCallFinder


def symmetric_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The per-side padding ``conv.padding`` stands for, or None when it pads unevenly."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        if any(k % 2 == 0 for k in conv.kernel_size):
            return None
        return tuple(d * (k // 2) for k, d in zip(conv.kernel_size, conv.dilation, strict=True))
    return tuple(conv.padding)


class NumbersApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        conv = gm.get_submodule(point["conv"].target)
        conv.padding = symmetric_padding(conv)
        conv._reversed_padding_repeated_twice = [p for p in reversed(conv.padding) for _ in range(2)]


def _worded(node: fx.Node) -> bool:
    conv = node.graph.owning_module.get_submodule(node.target)
    return isinstance(conv.padding, str) and symmetric_padding(conv) is not None


EXPLICIT_PADDING = RewriteRule("ExplicitPadding", ModuleCallFinder((nn.Conv2d,), "conv", where=_worded),
                               NumbersApplier())
"""No Conv2d whose padding has symmetric numbers keeps it as a word."""
