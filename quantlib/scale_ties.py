"""Scales that integer hardware needs equal, and the one rule that makes them so (docs/diana-numerics.md).

Three kinds of ties:
- an average pool floors its mean on the grid of its input: it takes its input's scale;
- a concatenation holds one integer tensor: the quantisers of its inputs share one scale (the largest);
- an add sums integers of one scale, with no multiplier per input: every input of an add, and every quantiser whose
  integers reach the add unchanged (through max pools, average pools, reshapes), share one scale. A tied input
  quantiser also takes its source's range, so that it is the identity once scales are powers of two.

Tied quantisers form groups (an input that feeds two adds joins their groups). The quantisers that observe values of
their own vote: a group's scale is min(max(their scales), output scale of every add the group feeds) (DIANA's
rule), and then every add whose output scale is finer than its inputs' gets its inputs' scale (its shift would be
negative: DIANA cannot shift left), repeated until nothing changes (scales only grow, so it ends). Pools and tied
input quantisers follow their group.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.float2fake.grid import grid_source
from quantlib.modules.average_pool import AveragePool2d
from quantlib.modules.concat import Concat
from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qmodule import QModule

ScaleHolder = QModule | AveragePool2d


def source_quantiser(node: fx.Node, modules: dict[str, nn.Module]) -> QModule | None:
    """The quantiser whose integers ``node`` carries unchanged, or None (an accumulator, a float value)."""
    source = grid_source(node, modules)
    module = modules.get(source.target) if source.op == "call_module" else None
    if isinstance(module, QHarmonisedAdd):
        return module.output_quantiser
    return module if isinstance(module, (QIdentity, QReLU)) else None


class _Groups:
    """Union-find over scale holders (by identity)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.holders: dict[int, ScaleHolder] = {}

    def find(self, h: ScaleHolder) -> int:
        key = id(h)
        self.holders.setdefault(key, h)
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def tie(self, a: ScaleHolder, b: ScaleHolder) -> None:
        self.parent[self.find(a)] = self.find(b)

    def members(self) -> dict[int, list[ScaleHolder]]:
        groups: dict[int, list[ScaleHolder]] = {}
        for holder in self.holders.values():
            groups.setdefault(self.find(holder), []).append(holder)
        return groups


def _scale_of(h: ScaleHolder) -> torch.Tensor:
    return h.scale.detach().amax()


def _set_scale(h: ScaleHolder, scale: torch.Tensor) -> None:
    with torch.no_grad():
        if isinstance(h, AveragePool2d):
            h.scale = scale.detach().reshape(()).clone()
        else:
            h.set_scale(scale.to(h.scale.dtype).expand_as(h.scale.detach()).clone())


def harmonise_scales(gm: fx.GraphModule) -> fx.GraphModule:
    """Give tied quantisers and pools of the calibrated fake-quantised ``gm`` their group's scale (see the module
    doc); returns ``gm``."""
    modules = dict(gm.named_modules())
    groups, voters = _Groups(), set()
    adds: list[tuple[ScaleHolder, QIdentity]] = []  # (a member of the add's input group, its output quantiser)
    for node in gm.graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, AveragePool2d):
            source = source_quantiser(node.args[0], modules)
            if source is not None:
                groups.tie(module, source)
                voters.add(id(source))
        elif isinstance(module, Concat):
            sources = [s for x in node.args if (s := source_quantiser(x, modules)) is not None]
            for source in sources:
                groups.tie(source, sources[0])
                voters.add(id(source))
        elif isinstance(module, QHarmonisedAdd):
            for x, quantiser in zip(node.args, module.input_quantisers, strict=True):
                groups.tie(quantiser, module.input_quantisers[0])
                source = source_quantiser(x, modules)
                if source is None:
                    voters.add(id(quantiser))
                    continue
                groups.tie(quantiser, source)
                voters.add(id(source))
                quantiser.spec = dataclasses.replace(quantiser.spec, qrange=source.spec.qrange)
            groups.find(module.output_quantiser)
            voters.add(id(module.output_quantiser))
            adds.append((module.input_quantisers[0], module.output_quantiser))
    members = groups.members()
    scale = {key: torch.stack([_scale_of(h) for h in hs if id(h) in voters]).amax()
             for key, hs in members.items() if any(id(h) in voters for h in hs)}
    for inputs, output in adds:
        key = groups.find(inputs)
        scale[key] = torch.minimum(scale[key], scale[groups.find(output)])
    changed = True
    while changed:
        changed = False
        for inputs, output in adds:
            key, out_key = groups.find(inputs), groups.find(output)
            if scale[out_key] < scale[key]:
                scale[out_key] = scale[key]
                changed = True
    for key, holders in members.items():
        if key in scale:
            for h in holders:
                _set_scale(h, scale[key])
    return gm
