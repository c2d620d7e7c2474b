"""Fold a BatchNorm into the Conv / Linear that feeds it, with the BatchNorm's running (inference) statistics.

With s = gamma / sqrt(var + eps) per output channel: W' = W * s and b' = (b - mean) * s + beta. The arithmetic runs in
float64 and is cast back to the weight's dtype, so the folded layer matches the pair to rounding error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, Rewriter, RewriteRule
from quantlib.editors.patterns import SequenceFinder, SequencePattern, module_role
from quantlib.errors import EditorError

LINEAR_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

LINEAR_THEN_BATCHNORM = SequencePattern([module_role("linear", LINEAR_TYPES), module_role("bn", BATCHNORM_TYPES)])


class FoldableBatchNormFinder(Finder):
    """Every Linear/Conv -> BatchNorm pair whose linear op is not in ``keep``; refuses pairs that cannot be folded,
    naming both nodes and why."""

    def __init__(self, keep: Collection[str] = ()) -> None:
        self.keep = frozenset(keep)

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        points = [p for p in SequenceFinder(LINEAR_THEN_BATCHNORM).find(gm) if p["linear"].target not in self.keep]
        for point in points:
            linear, bn = point["linear"], point["bn"]
            if len(linear.users) > 1:
                others = sorted(u.name for u in linear.users if u is not bn)
                raise EditorError(
                    f"Cannot fold BatchNorm '{bn.name}' into '{linear.name}': the output of '{linear.name}' is also "
                    f"read by {others}, which would then see the normalised values. Give those readers their own "
                    f"layer, or fold with a filter that skips this pair.")
            if not gm.get_submodule(bn.target).track_running_stats:
                raise EditorError(
                    f"Cannot fold BatchNorm '{bn.name}' into '{linear.name}': it has no running statistics "
                    f"(track_running_stats=False), so it normalises with batch statistics even at inference.")
        return points


def fold_batchnorm_into(linear: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Rewrite ``linear``'s weight and bias in place so that ``linear`` alone computes ``bn(linear(x))`` (eval mode)."""
    dtype = linear.weight.dtype
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.affine else torch.ones_like(var)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    weight = linear.weight.double() * scale.reshape(-1, *([1] * (linear.weight.dim() - 1)))
    bias = linear.bias.double() if linear.bias is not None else torch.zeros_like(mean)
    with torch.no_grad():
        linear.weight.copy_(weight.to(dtype))
    linear.bias = nn.Parameter(((bias - mean) * scale + beta).to(dtype), requires_grad=linear.weight.requires_grad)


class FoldApplier(Applier):
    """Fold the BatchNorm's statistics into the linear op; readers of the BatchNorm read the linear op instead."""

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        linear, bn = point["linear"], point["bn"]
        fold_batchnorm_into(gm.get_submodule(linear.target), gm.get_submodule(bn.target))
        bn.replace_all_uses_with(linear)
        gm.graph.erase_node(bn)


class FoldBatchNorm(Rewriter):
    """No BatchNorm directly after a Conv or Linear is left in the graph, except after the linear modules named in
    ``keep`` (a back end that applies those BatchNorms after the accumulator, as DIANA's analog core does)."""

    def __init__(self, keep: Collection[str] = ()) -> None:
        super().__init__(RewriteRule("FoldBatchNorm", FoldableBatchNormFinder(keep), FoldApplier()))

    def requires(self, gm: fx.GraphModule) -> None:
        calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
        reused = sorted(t for t, k in calls.items() if k > 1)
        if reused:
            raise EditorError(f"{self!r} needs every module called once, but {reused} are called more than once; "
                              f"run SplitReusedModules first.")
