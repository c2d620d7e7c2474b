"""Average pools inside the quantised region become sum pools: integers sum exactly, and the division by the window
size moves into the requantisation that follows (``meta['pool_divisor']``)."""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Rewriter
from quantlib.editors.fake2true.scale_propagation import pool_window
from quantlib.editors.float2fake.grid import is_quantiser
from quantlib.editors.patterns import ModuleCallFinder
from quantlib.errors import UnsupportedOpError
from quantlib.modules.true_quant import SumPool2d


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class SumPoolApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["pool"]
        pool = gm.get_submodule(node.target)
        modules = dict(gm.named_modules())
        readers = [u for u in node.users if not is_quantiser(u, modules)]
        if readers:
            raise UnsupportedOpError(f"Average pool '{node.name}' is read by {[u.name for u in readers]} before any "
                                     f"requantisation; an integer sum must be requantised first (the Interposer "
                                     f"puts a quantiser after every average pool).")
        divisor = pool_window(node, pool)
        if isinstance(pool, nn.AdaptiveAvgPool2d):
            h, w = node.args[0].meta["tensor_meta"].shape[-2:]
            out_h, out_w = tuple(h if o is None else o for o in _pair(pool.output_size))
            kernel = None if (out_h, out_w) == (1, 1) else (h // out_h, w // out_w)
            summed = SumPool2d(kernel, kernel)
        else:
            kernel = _pair(pool.kernel_size)
            summed = SumPool2d(kernel, _pair(pool.stride or pool.kernel_size), _pair(pool.padding))
        gm.add_submodule(node.target, summed)
        node.meta["scale"] = node.args[0].meta["scale"]
        node.meta["pool_divisor"] = divisor


class AvgPoolToSumPool(Rewriter):
    def __init__(self) -> None:
        super().__init__(ModuleCallFinder((nn.AvgPool2d, nn.AdaptiveAvgPool2d), "pool",
                                          where=lambda n: n.args[0].meta.get("scale") is not None),
                         SumPoolApplier())
