"""The option-A shortcut of CIFAR ResNets, ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))``, as the 1x1 convolution
that computes it exactly: stride s for the slice ``[::s, ::s]``, and an identity block between p zero output
channels on either side. Its weights are frozen (the shortcut has no parameters in the model as written).

A strided slice alone or a channel zero-pad alone is converted the same way. The input's channel count comes from
the example input's shapes; without them nothing is converted (the pre-flight check says so).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, RewriteRule
from quantlib.graphs.naming import parent_module_path, unique_submodule_name

EVERYTHING = slice(None, None, None)


def _rank(node: fx.Node) -> int | None:
    meta = node.meta.get("tensor_meta")
    return len(meta.shape) if hasattr(meta, "shape") else None


def spatial_stride(node: fx.Node) -> int | None:
    """s for ``x[:, :, ::s, ::s]`` (or ``x[..., ::s, ::s]``) of a 4-D ``x`` with known shape, else None."""
    if not (node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], fx.Node)):
        return None
    index = node.args[1]
    if not isinstance(index, tuple) or _rank(node.args[0]) != 4:
        return None
    if len(index) == 3 and index[0] is Ellipsis:
        index = (EVERYTHING, EVERYTHING, *index[1:])
    if len(index) != 4 or index[:2] != (EVERYTHING, EVERYTHING) or not all(isinstance(i, slice) for i in index[2:]):
        return None
    h, w = index[2:]
    same = h.step == w.step and h.start in (None, 0) and w.start in (None, 0) and h.stop is None and w.stop is None
    return (h.step or 1) if same and (h.step or 1) >= 1 else None


def channel_padding(node: fx.Node) -> tuple[int, int] | None:
    """(before, after) for ``F.pad(x, (0, 0, 0, 0, before, after))`` of a 4-D ``x`` with zeros, else None."""
    if not (node.op == "call_function" and node.target is F.pad and isinstance(node.args[0], fx.Node)):
        return None
    args = dict(zip(("input", "pad", "mode", "value"), node.args, strict=False)) | node.kwargs
    pad, mode, value = tuple(args.get("pad", ())), args.get("mode", "constant"), args.get("value")
    if _rank(args["input"]) != 4 or len(pad) != 6 or pad[:4] != (0, 0, 0, 0) or mode != "constant":
        return None
    if value not in (None, 0, 0.0) or not all(isinstance(p, int) and p >= 0 for p in pad[4:]):
        return None
    return pad[4], pad[5]


class ShortcutFinder(Finder):
    """Every channel zero-pad (with the strided slice it reads, if that has no other reader) and every other strided
    slice."""

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        points, taken = [], set()
        for node in gm.graph.nodes:
            if channel_padding(node) is None:
                continue
            source = node.args[0]
            if spatial_stride(source) is not None and len(source.users) == 1:
                points.append(ApplicationPoint((source, node), {"slice": source, "pad": node}))
                taken.add(source)
            else:
                points.append(ApplicationPoint((node,), {"pad": node}))
        points += [ApplicationPoint((n,), {"slice": n}) for n in gm.graph.nodes
                   if n not in taken and spatial_stride(n) is not None]
        return sorted(points, key=lambda p: list(gm.graph.nodes).index(p.nodes[0]))


def shortcut_conv(channels: int, stride: int, before: int, after: int) -> nn.Conv2d:
    """The frozen 1x1 conv: input channel i goes to output channel before + i, the other outputs are 0."""
    conv = nn.Conv2d(channels, before + channels + after, 1, stride, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[before:before + channels, :, 0, 0] = torch.eye(channels)
    conv.weight.requires_grad_(False)
    return conv


class ShortcutConvApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        first, last = point.nodes[0], point.nodes[-1]
        source = first.args[0]
        stride = spatial_stride(point["slice"]) if point.get("slice") is not None else 1
        before, after = channel_padding(point["pad"]) if point.get("pad") is not None else (0, 0)
        name = unique_submodule_name(gm, parent_module_path(first), "shortcut_conv")
        gm.add_submodule(name, shortcut_conv(source.meta["tensor_meta"].shape[1], stride, before, after))
        with gm.graph.inserting_before(first):
            conv = gm.graph.call_module(name, (source,))
        conv.meta = dict(last.meta)
        last.replace_all_uses_with(conv)
        for node in reversed(point.nodes):
            gm.graph.erase_node(node)


SHORTCUT_TO_CONV = RewriteRule("ShortcutToConv", ShortcutFinder(), ShortcutConvApplier())
"""No strided spatial slice and no channel zero-pad of a 4-D tensor with known shape is left."""
