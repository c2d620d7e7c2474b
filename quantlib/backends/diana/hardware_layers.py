"""The fused hardware layers of an exact or integer DIANA graph, in topological order: a linear op (digital conv,
analog conv, linear), an average pool or an add, each with the requantisation that ends it; and max pools. DORY's files,
the golden activations and the report are all written per hardware layer. What a kind of layer is, is a ``LayerKind``;
DIANA's kinds are one table, ``layer_kinds.DIANA_LAYER_KINDS``.

The input quantiser (the first requantisation, of the real input) happens outside the chip; a requantisation that
feeds an add without ending a layer belongs to that add (DORY's ``in1_`` / ``in2_`` attributes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from quantlib.backends.diana.true_analog_conv import TrueAnalogConv2d
from quantlib.errors import ExportError
from quantlib.graphs.value_preserving import is_reshape
from quantlib.modules.true_quant import Requant, ScaleTunnel


@dataclass(frozen=True)
class LayerKind:
    """One kind of hardware layer. Its pattern: a call of ``op`` read by the one requantisation that ends it (unless
    ``requantised`` is False); with ``owns_input_requants``, a requantisation that feeds it without ending a layer is
    its own (DORY's add: ``in1_`` / ``in2_``). Then what the report row adds (``row(op, fake_op)``: bits, scales,
    requant entries), the rules its mapped numbers must keep (``checks(layer, op, requant, modules)``: errors with
    fixes), what upstream DORY does not compute as the chip would (``dory_limits(layer, requant, in_channels)``:
    warnings), and how the DORY file writes it (``emit(builder, layer, modules, tensors, shapes)``)."""

    name: str
    op: type[nn.Module]
    emit: Callable[..., tuple[str, list[int]]]
    row: Callable[[nn.Module, nn.Module | None], dict[str, dict[str, Any]]] = lambda op, fake_op: {}
    checks: Callable[..., list[Any]] = lambda layer, op, requant, modules: []
    dory_limits: Callable[..., list[Any]] = lambda layer, requant, in_channels: []
    requantised: bool = True
    owns_input_requants: bool = False


@dataclass(frozen=True)
class HardwareLayer:
    """One fused layer: ``op`` then ``requant`` (None for a max pool). ``inputs`` are the nodes whose values it
    reads; for an add, ``input_requants`` holds per input the requantisation the add applies first (or None)."""

    index: int
    kind: LayerKind
    op: fx.Node
    requant: fx.Node | None
    inputs: tuple[fx.Node, ...]
    input_requants: tuple[fx.Node | None, ...] = ()

    @property
    def name(self) -> str:
        """The module path of the layer's op (a descriptor's layer name for convs and linears)."""
        return str(self.op.target)

    @property
    def output(self) -> fx.Node:
        return self.requant if self.requant is not None else self.op


@dataclass(frozen=True)
class HardwareGraph:
    """The layers of a graph, the node that holds its integer input (the input quantiser) and the real value of one
    unit of that input."""

    input_quantiser: fx.Node
    input_scale: float
    layers: list[HardwareLayer]


def range_bits(lo: int, hi: int) -> int:
    """The bits that hold the integers [lo, hi]: ceil(log2(hi - lo + 1))."""
    return max(1, (hi - lo).bit_length())


def scale_exponent(scale: torch.Tensor) -> int | list[int]:
    """k of a power-of-two scale 2^k (one per channel where they differ)."""
    k = torch.log2(scale.detach().double().reshape(-1)).round().long().tolist()
    return k[0] if len(set(k)) == 1 else k


def requant_mul_add(op: nn.Module, requant: Requant, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel ``mul`` and ``add`` of a layer's requantisation, what DORY's Mul and Add hold: a digital
    layer's bias stays in its Conv; an analog layer's (on the ADC sum's grid) moves into ``add``
    (``floor(((acc + bias) * mul + add) / 2^s)``)."""
    mul = requant.mul.detach().double().reshape(-1).expand(channels)
    add = requant.add.detach().double().reshape(-1).expand(channels)
    bias = op.bias if isinstance(op, TrueAnalogConv2d) else None
    return mul.clone(), (add if bias is None else add + bias.detach().double().reshape(-1) * mul).clone()


def hardware_layers(gm: fx.GraphModule, kinds: Sequence[LayerKind]) -> HardwareGraph:
    """Split ``gm`` (exact or integer) into hardware layers of ``kinds``; ExportError names any node that fits no
    layer."""
    modules = dict(gm.named_modules())
    kind_of = {kind.op: kind for kind in kinds}

    def module(node: fx.Node) -> nn.Module | None:
        return modules.get(node.target) if node.op == "call_module" else None

    def owns_requants(node: fx.Node) -> bool:
        kind = kind_of.get(type(module(node)))
        return kind is not None and kind.owns_input_requants

    names = ", ".join(kind.name for kind in kinds)

    def without_tunnels(node: fx.Node) -> fx.Node:
        while isinstance(module(node), ScaleTunnel):
            node = node.args[0]
        return node

    def is_layer_op(node: fx.Node) -> bool:
        kind = kind_of.get(type(module(node)))
        return kind is not None and kind.requantised

    input_quantiser, layers = None, []
    for node in gm.graph.nodes:
        m = module(node)
        if node.op in ("placeholder", "output") or isinstance(m, ScaleTunnel) or is_reshape(node, modules):
            continue  # DORY's tensors are 4-D: no reshapes
        if isinstance(m, Requant):
            source = without_tunnels(node.args[0])
            if source.op == "placeholder" and input_quantiser is None:
                input_quantiser = node
            elif not is_layer_op(source) and not all(owns_requants(u) for u in node.users):
                raise ExportError(f"Requantisation '{node.name}' neither ends a layer nor feeds an add; DIANA "
                                  f"requantises only at the end of a layer ({names}).")
            continue
        kind = kind_of.get(type(m))
        if kind is None:
            what = type(m).__name__ if m is not None else f"{node.op} {node.target}"
            raise ExportError(f"Node '{node.name}' ({what}) is not a DIANA layer; the chip runs these kinds of layer: "
                              f"{names}.")
        if input_quantiser is None:
            raise ExportError(f"Layer '{node.name}' reads the network input before any quantiser: DIANA's input is "
                              f"8-bit integers, quantise it first.")
        requant = None
        if kind.requantised:
            readers = list(node.users)
            if len(readers) != 1 or not isinstance(module(readers[0]), Requant):
                raise ExportError(f"Layer '{node.name}' must be read by exactly one requantisation, got "
                                  f"{[r.name for r in readers]}.")
            requant = readers[0]
        inputs, input_requants = list(node.args), []
        if kind.owns_input_requants:  # a requantisation that ends no layer is the add's own (DORY's in1_ / in2_)
            for i, arg in enumerate(node.args):
                folded = isinstance(module(arg), Requant) and not is_layer_op(without_tunnels(arg.args[0]))
                input_requants.append(arg if folded else None)
                inputs[i] = arg.args[0] if folded else arg
        layers.append(HardwareLayer(len(layers), kind, node, requant, tuple(inputs), tuple(input_requants)))
    if input_quantiser is None:
        raise ExportError("The graph has no input quantiser; build it with DianaModule.from_fp_model().")
    return HardwareGraph(input_quantiser, _input_scale(input_quantiser, module), layers)


def _input_scale(quantiser: fx.Node, module) -> float:
    """The input quantiser's real scale: its own in an exact graph, divided by the input tunnel's factor (which
    holds the scale's inverse) in an integer one."""
    scale = float(module(quantiser).eps_out)
    node = quantiser.args[0]
    while isinstance(module(node), ScaleTunnel):
        scale /= float(module(node).factor)
        node = node.args[0]
    return scale
