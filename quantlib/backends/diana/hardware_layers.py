"""The fused hardware layers of an exact or integer DIANA graph, in topological order: a linear op (digital conv,
analog conv, linear), an average pool or an add, each with the requantisation that ends it; and max pools. DORY's files,
the golden activations and the report are all written per hardware layer.

The input quantiser (the first requantisation, of the real input) happens outside the chip; a requantisation that
feeds an add without ending a layer belongs to that add (DORY's ``in1_`` / ``in2_`` attributes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx as fx
from torch import nn

from quantlib.backends.diana.true_analog_conv import TrueAnalogConv2d
from quantlib.errors import ExportError
from quantlib.graphs.value_preserving import is_reshape
from quantlib.modules.add import Add
from quantlib.modules.true_quant import Requant, ScaleTunnel, TrueAvgPool2d, TrueConv2d, TrueLinear

Kind = Literal["conv", "analog_conv", "linear", "pool", "add", "maxpool"]
KINDS: dict[type[nn.Module], Kind] = {TrueConv2d: "conv", TrueAnalogConv2d: "analog_conv", TrueLinear: "linear",
                                      TrueAvgPool2d: "pool", Add: "add", nn.MaxPool2d: "maxpool"}


@dataclass(frozen=True)
class HardwareLayer:
    """One fused layer: ``op`` then ``requant`` (None for a max pool). ``inputs`` are the nodes whose values it
    reads; for an add, ``input_requants`` holds per input the requantisation the add applies first (or None)."""

    index: int
    kind: Kind
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


def requant_mul_add(op: nn.Module, requant: Requant, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel ``mul`` and ``add`` of a layer's requantisation, what DORY's Mul and Add hold: a digital
    layer's bias stays in its Conv; an analog layer's (on the ADC sum's grid) moves into ``add``
    (``floor(((acc + bias) * mul + add) / 2^s)``)."""
    mul = requant.mul.detach().double().reshape(-1).expand(channels)
    add = requant.add.detach().double().reshape(-1).expand(channels)
    bias = op.bias if isinstance(op, TrueAnalogConv2d) else None
    return mul.clone(), (add if bias is None else add + bias.detach().double().reshape(-1) * mul).clone()


def hardware_layers(gm: fx.GraphModule) -> HardwareGraph:
    """Split ``gm`` (exact or integer) into hardware layers; ExportError names any node that fits no layer."""
    modules = dict(gm.named_modules())

    def module(node: fx.Node) -> nn.Module | None:
        return modules.get(node.target) if node.op == "call_module" else None

    def without_tunnels(node: fx.Node) -> fx.Node:
        while isinstance(module(node), ScaleTunnel):
            node = node.args[0]
        return node

    def is_layer_op(node: fx.Node) -> bool:
        return type(module(node)) in KINDS and not isinstance(module(node), nn.MaxPool2d)

    input_quantiser, layers = None, []
    for node in gm.graph.nodes:
        m = module(node)
        if node.op in ("placeholder", "output") or isinstance(m, ScaleTunnel) or is_reshape(node, modules):
            continue  # DORY's tensors are 4-D: no reshapes
        if isinstance(m, Requant):
            source = without_tunnels(node.args[0])
            if source.op == "placeholder" and input_quantiser is None:
                input_quantiser = node
            elif not is_layer_op(source) and not all(isinstance(module(u), Add) for u in node.users):
                raise ExportError(f"Requantisation '{node.name}' neither ends a layer nor feeds an add; DIANA "
                                  f"requantises only at the end of a conv, linear, pool or add.")
            continue
        kind = KINDS.get(type(m))
        if kind is None:
            what = type(m).__name__ if m is not None else f"{node.op} {node.target}"
            raise ExportError(f"Node '{node.name}' ({what}) is not a DIANA layer; the chip runs convolutions, linear "
                              f"layers, pools and adds.")
        if input_quantiser is None:
            raise ExportError(f"Layer '{node.name}' reads the network input before any quantiser: DIANA's input is "
                              f"8-bit integers, quantise it first.")
        requant = None
        if kind != "maxpool":
            readers = list(node.users)
            if len(readers) != 1 or not isinstance(module(readers[0]), Requant):
                raise ExportError(f"Layer '{node.name}' must be read by exactly one requantisation, got "
                                  f"{[r.name for r in readers]}.")
            requant = readers[0]
        inputs, input_requants = list(node.args), []
        if kind == "add":  # an input requantisation that ends no layer is the add's own (DORY's in1_ / in2_)
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
