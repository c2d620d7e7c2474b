"""A BatchNorm2d that follows no Conv / Linear it could fold into (after an add, a ReLU, a pool, at the input, or
after a layer whose output others read too) becomes the depthwise 1x1 convolution computing its inference affine:
weight gamma / sqrt(var + eps), bias beta - mean * weight, per channel."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, RewriteRule
from quantlib.editors.canonicalise.fold_batchnorm import LINEAR_TYPES


def _folds_into(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], LINEAR_TYPES) and len(node.users) == 1


class LoneBatchNormFinder(Finder):
    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        return [ApplicationPoint((n,), {"bn": n}) for n in gm.graph.nodes
                if n.op == "call_module" and type(modules[n.target]) is nn.BatchNorm2d
                and modules[n.target].track_running_stats and not _folds_into(n.args[0], modules)]


def depthwise_conv(bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The depthwise 1x1 conv equal to ``bn`` in eval mode (float64 arithmetic, cast back)."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.affine else torch.ones_like(var)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    conv = nn.Conv2d(bn.num_features, bn.num_features, 1, groups=bn.num_features, bias=True)
    dtype = bn.running_var.dtype
    with torch.no_grad():
        conv.weight.copy_(scale.reshape(-1, 1, 1, 1).to(dtype))
        conv.bias.copy_((beta - mean * scale).to(dtype))
    return conv


class DepthwiseConvApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        name = point["bn"].target
        gm.add_submodule(name, depthwise_conv(gm.get_submodule(name)))


LONE_BATCHNORM_TO_CONV = RewriteRule("LoneBatchNormToConv", LoneBatchNormFinder(), DepthwiseConvApplier())
"""No BatchNorm2d with running statistics is left that FoldBatchNorm could not fold."""
