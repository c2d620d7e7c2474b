"""Average pools become integer ones: ``TrueAvgPool2d`` (the exact ``sum / (kh * kw)``) then a ``Requant`` that floors
it on the input's grid (``mul = 1``, ``shift = 0``) and clips it to the input's range, which the mean never leaves
(``meta['fake_node']`` names the pool it reproduces). Runs after the Requantiser, so that the integers a pool reads
come from a requantisation."""

from __future__ import annotations

import torch
import torch.fx as fx

from quantlib.editors.base import ApplicationPoint, Applier, RewriteRule
from quantlib.editors.fake2true.requantiser import integer_range
from quantlib.editors.fake2true.scale_propagation import scales_tied
from quantlib.editors.patterns import ModuleCallFinder
from quantlib.errors import EditorError, UnsupportedOpError
from quantlib.graphs.naming import unique_submodule_name
from quantlib.modules.average_pool import AveragePool2d
from quantlib.modules.true_quant import Requant, TrueAvgPool2d


class AveragePoolSplitApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["pool"]
        pool: AveragePool2d = gm.get_submodule(node.target)
        scale = node.args[0].meta["scale"]
        if pool.scale.numel() == 0 or not scales_tied([scale, pool.scale.reshape(scale.shape)]):
            raise EditorError(f"Average pool '{node.name}' floors on scale {pool.scale.tolist()} but reads scale "
                              f"{scale.tolist()}: harmonise_scales() ties the two (calibrate does).")
        source = integer_range(node.args[0], dict(gm.named_modules()))
        if source is None:
            raise UnsupportedOpError(f"Average pool '{node.name}' reads '{node.args[0].name}', which no "
                                     f"requantisation computes; quantise the pool's input first.")
        h, w = node.args[0].meta["tensor_meta"].shape[2:]
        kernel, stride = pool.window(h, w)
        gm.add_submodule(node.target, TrueAvgPool2d(kernel, stride, pool.padding, keepdim=True))
        name = unique_submodule_name(gm, node.target.rpartition(".")[0], f"{node.target.rpartition('.')[2]}_requant")
        gm.add_submodule(name, Requant(torch.ones(()), torch.zeros(()), 0, *source, scale, scale))
        with gm.graph.inserting_after(node):
            requant = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(requant, delete_user_cb=lambda user: user is not requant)
        requant.meta = {**node.meta, "scale": scale, "fake_node": node.name}
        if not pool.keepdim and pool.is_global:
            with gm.graph.inserting_after(requant):
                flat = gm.graph.call_method("flatten", (requant, 1))
            requant.replace_all_uses_with(flat, delete_user_cb=lambda user: user is not flat)
            flat.meta = dict(node.meta)
            shape = node.meta["tensor_meta"]
            node.meta["tensor_meta"] = shape._replace(shape=torch.Size([*shape.shape, 1, 1]))
            requant.meta["tensor_meta"] = node.meta["tensor_meta"]


AVERAGE_POOL_INTEGERISER = RewriteRule("AveragePoolIntegeriser", ModuleCallFinder((AveragePool2d,), "pool"),
                                       AveragePoolSplitApplier())
"""Every AveragePool2d becomes a TrueAvgPool2d read by one flooring Requant."""
