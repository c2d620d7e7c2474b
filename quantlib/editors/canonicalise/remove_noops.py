"""Remove what computes nothing at inference: dropout (module or functional), identity modules and
``x.contiguous()``."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, RewriteRule
from quantlib.errors import EditorError

NOOP_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                nn.FeatureAlphaDropout)
NOOP_FUNCTIONS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
                  torch.dropout)


class NoOpFinder(Finder):
    """Every call of an identity or dropout module, every functional dropout and every ``contiguous()``."""

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        points = []
        for node in gm.graph.nodes:
            is_noop = (node.op == "call_module" and isinstance(modules[node.target], NOOP_MODULES)
                       or node.op == "call_function" and node.target in NOOP_FUNCTIONS
                       or node.op == "call_method" and node.target in ("dropout", "contiguous"))
            if is_noop:
                points.append(ApplicationPoint(nodes=(node,), roles={"noop": node}))
        return points


class BypassApplier(Applier):
    """Readers of the no-op read its input instead; the no-op is erased."""

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["noop"]
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node):
            raise EditorError(f"No-op node '{node.name}' ({node.target}) does not take a traced tensor as input.")
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)


REMOVE_NO_OPS = RewriteRule("RemoveNoOps", NoOpFinder(), BypassApplier())
"""No dropout and no identity module is left in the graph."""
