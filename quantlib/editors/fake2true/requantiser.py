"""Activation quantisers become requantisations, and harmonised adds become requantised inputs, an integer add and
a requantised output: ``y = clip(floor((x * mul + add) / 2**shift), lo, hi)`` with the scales kept alongside."""

from __future__ import annotations

import math

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, RewriteRule
from quantlib.editors.fake2true.requant_parameters import requant_mul_shift
from quantlib.editors.fake2true.scale_propagation import scales_tied
from quantlib.editors.patterns import ModuleCallFinder
from quantlib.errors import EditorError, UnsupportedOpError
from quantlib.graphs.naming import unique_submodule_name
from quantlib.graphs.tracing import same_shape
from quantlib.graphs.value_preserving import is_value_preserving
from quantlib.modules.add import Add
from quantlib.modules.concat import Concat
from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qmodule import QModule
from quantlib.modules.true_quant import Requant

FLOOR_QOPS = ("floor", "pact")
"""Quantisation ops whose forward is DIANA's floor quantiser, which a requantisation reproduces exactly."""

ROUND_QOPS = ("round", "lsq")
"""Quantisation ops that round half up on the module's own grid: a requantisation adds half a unit before it
floors."""


def make_requant(quantiser: QModule, in_scale: torch.Tensor | None) -> Requant:
    """The requantisation that reproduces ``quantiser`` on values of scale ``in_scale`` (None: real values)."""
    qrange = quantiser.spec.qrange
    if quantiser.spec.qop not in FLOOR_QOPS + ROUND_QOPS or qrange.step != 1:
        raise UnsupportedOpError(f"Quantiser '{quantiser.qualname}' (qop {quantiser.spec.qop!r}, range {qrange}) "
                                 f"cannot become an integer requantisation: use a qop of {FLOOR_QOPS + ROUND_QOPS} "
                                 f"with levels one apart.")
    rounds = quantiser.spec.qop in ROUND_QOPS
    eps_out = quantiser.scale.detach().double()
    eps_out = eps_out.reshape(()) if eps_out.numel() == 1 else eps_out
    lo, hi = _integer_bounds(quantiser, eps_out)
    if in_scale is None:  # real-valued input: the quantiser is floor(x / eps_out) (+ 1/2 when it rounds)
        return Requant(torch.ones(()), torch.tensor(0.5 if rounds else 0.0), 0, lo, hi, eps_out, eps_out)
    mul, shift = requant_mul_shift(in_scale / eps_out)
    half = 2.0 ** (shift - 1) if rounds and shift > 0 else 0.0  # shift 0: integers times mul, nothing to round
    return Requant(mul, torch.tensor(half), shift, lo, hi, in_scale, eps_out, reads_integers=True)


def _integer_bounds(quantiser: QModule, eps_out: torch.Tensor) -> tuple[int, int]:
    """The integer clip of the quantiser's output: its range (from its learned zero point, if it has one), cut at 0
    by a ReLU and at ceiling / eps by a ReLU6."""
    qrange = quantiser.spec.qrange
    if qrange.offset is None:
        zeros = quantiser.zero.unique()
        if zeros.numel() != 1:
            raise UnsupportedOpError(f"Quantiser '{quantiser.qualname}' has one learned zero point per channel "
                                     f"({zeros.tolist()[:4]}...); an integer requantisation clips every channel "
                                     f"alike: quantise its activations per tensor.")
        lo = int(zeros)
        hi = lo + qrange.n_levels - 1
    else:
        lo, hi = qrange.min, qrange.max
    if isinstance(quantiser, QReLU):
        lo = max(lo, 0)
        if quantiser.ceiling is not None:
            if eps_out.numel() != 1:
                raise UnsupportedOpError(f"Quantiser '{quantiser.qualname}' has a ceiling and one scale per channel; "
                                         f"integer requantisation needs one scale to clip at the ceiling.")
            hi = min(hi, math.floor(quantiser.ceiling / float(eps_out)))
    return lo, hi


class RequantApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["quantiser"]
        source = node.args[0]
        requant = make_requant(gm.get_submodule(node.target), source.meta.get("scale"))
        gm.add_submodule(node.target, requant)


REQUANTISER = RewriteRule("Requantiser", ModuleCallFinder((QIdentity, QReLU), "quantiser"), RequantApplier())
"""Every QIdentity / QReLU becomes a Requant."""


class AddSplitApplier(Applier):
    """``add(x0, x1, ...)`` becomes ``requant_out(requant_0(x0) + requant_1(x1) + ...)`` (integer adds; the last one
    keeps the add's module name, so that the hardware layer is named as the user's add). The output requantisation
    records the fake node it reproduces (``meta['fake_node']``)."""

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["add"]
        add: QHarmonisedAdd = gm.get_submodule(node.target)
        scales = torch.stack([q.scale.detach().double().reshape(()) for q in add.input_quantisers])
        if not scales_tied(list(scales)):
            raise EditorError(f"Add '{node.name}' is not harmonised (input scales {scales.tolist()}): call "
                              f"harmonise_scales() (calibrate does) before integerising.")
        parent, _, leaf = node.target.rpartition(".")
        out_name = unique_submodule_name(gm, parent, f"{leaf}_requant")
        gm.add_submodule(out_name, make_requant(add.output_quantiser, scales[0]))
        with gm.graph.inserting_before(node):
            total = None
            for i, (x, quantiser) in enumerate(zip(node.args, add.input_quantisers, strict=True)):
                name = unique_submodule_name(gm, parent, f"{leaf}_in{i}_requant")
                gm.add_submodule(name, make_requant(quantiser, x.meta.get("scale")))
                requanted = gm.graph.call_module(name, (x,))
                requanted.meta["scale"] = scales[0]
                same_shape(requanted, x)
                if total is None:
                    total = requanted
                    continue
                last = i == len(node.args) - 1
                add_name = node.target if last else unique_submodule_name(gm, parent, f"{leaf}_sum")
                gm.add_submodule(add_name, Add())
                total = gm.graph.call_module(add_name, (total, requanted))
                total.meta["scale"] = scales[0]
                same_shape(total, node)
            out = gm.graph.call_module(out_name, (total,))
        out.meta = {**node.meta, "fake_node": node.name}
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)


ADD_SPLITTER = RewriteRule("AddSplitter", ModuleCallFinder((QHarmonisedAdd,), "add"), AddSplitApplier())
"""Every QHarmonisedAdd becomes per-input Requants, integer Adds and an output Requant."""


def source_requant(node: fx.Node, modules: dict[str, nn.Module]) -> Requant | None:
    """The requantisation whose integers ``node`` carries unchanged (through max pools and reshapes), or None."""
    while True:
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, Requant):
            return module
        if not is_value_preserving(node, modules):
            return None
        node = node.args[0]


def integer_range(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[int, int] | None:
    """[lo, hi] of the integers ``node`` carries: its source requantisation's clip, the union over a
    concatenation's inputs; None where no requantisation computes them."""
    module = modules.get(node.target) if node.op == "call_module" else None
    if isinstance(module, Concat):
        ranges = [integer_range(x, modules) for x in node.args]
        if any(r is None for r in ranges):
            return None
        return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)
    source = source_requant(node, modules)
    return None if source is None else (source.lo, source.hi)


def is_identity(requant: Requant, source: Requant | None) -> bool:
    """Whether ``requant`` leaves the integers of ``source`` as they are: same scale, no multiplier or shift, and a
    clip that contains the source's range."""
    return (source is not None and requant.shift == 0 and bool((requant.mul == 1).all())
            and bool((requant.add == 0).all()) and requant.eps_in.shape == requant.eps_out.shape
            and bool((requant.eps_in == requant.eps_out).all()) and requant.lo <= source.lo and source.hi <= requant.hi)


class IdentityRequantFinder(Finder):
    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        return [ApplicationPoint((n,), {"requant": n}) for n in gm.graph.nodes
                if n.op == "call_module" and isinstance(modules[n.target], Requant)
                and is_identity(modules[n.target], source_requant(n.args[0], modules))]


class BypassApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["requant"]
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)


IDENTITY_REQUANT_REMOVER = RewriteRule("IdentityRequantRemover", IdentityRequantFinder(), BypassApplier())
"""No requantisation that changes nothing is left (an add's input that is already on the add's grid)."""
