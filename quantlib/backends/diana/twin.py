"""The executable twin of a DORY network: the same integer layers as standard ONNX that onnxruntime runs, with the
analog ADC steps written out. Two shapes of it:

- ``dory``: the input is DORY's, the integer input (``input.txt``), held in a float tensor;
- ``htvm``: the input is the real input, quantised inside the graph (``Mul(1/eps) -> Floor -> Clip``), as HTVM takes it.

Both end at the last layer's integers (no output scale), and every layer ends with its requantisation
(``... -> Div(2^s) -> Floor -> Clip``, the Mul / Add written only where they are not 1 / 0). Linear ops are
``ConvInteger`` / ``MatMulInteger`` (with the int32 bias added after them): onnxruntime has no int8 ``Conv``, so the
``Conv (int8 weights, int32 bias)`` of HTVM's form (docs/export-format.md) is written in its executable standard form.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.fx as fx

from quantlib.backends.diana.analog_integerisation import DIANA_EMITTERS
from quantlib.backends.diana.hardware_layers import HardwareGraph
from quantlib.backends.onnx.integer_export import IntegerOnnx, integer_onnx
from quantlib.graphs.graph_copy import graph_copy
from quantlib.modules.true_quant import ScaleTunnel

Dialect = Literal["dory", "htvm"]
DIALECTS = ("dory", "htvm")


def twin_graph(integer: fx.GraphModule, hw: HardwareGraph, dialect: Dialect) -> fx.GraphModule:
    """``integer``'s graph without its output scales and, for ``dory``, without its input quantiser (a new graph over
    the same, unchanged modules)."""
    twin = graph_copy(integer)
    nodes = {n.name: n for n in twin.graph.nodes}
    modules = dict(twin.named_modules())
    for node in reversed(list(twin.graph.nodes)):
        if node.op == "call_module" and isinstance(modules[node.target], ScaleTunnel) \
                and all(u.op == "output" for u in node.users):
            node.replace_all_uses_with(node.args[0])
            twin.graph.erase_node(node)
    if dialect == "dory":
        quantiser = nodes[hw.input_quantiser.name]
        graph_input = next(iter(twin.graph.find_nodes(op="placeholder")))
        tunnel = quantiser.args[0]
        quantiser.replace_all_uses_with(graph_input)
        twin.graph.erase_node(quantiser)
        if tunnel is not graph_input:
            twin.graph.erase_node(tunnel)
    twin.graph.eliminate_dead_code()
    twin.recompile()
    return twin


def twin_onnx(integer: fx.GraphModule, hw: HardwareGraph, dialect: Dialect, sample: torch.Tensor,
              name: str) -> IntegerOnnx:
    """The executable twin of ``integer``; ``sample`` is a real input (the dory twin is traced on its integers)."""
    twin = twin_graph(integer, hw, dialect)
    if dialect == "htvm":
        return integer_onnx(twin, sample, name, emitters=DIANA_EMITTERS)
    rq = integer.get_submodule(hw.input_quantiser.target)
    return integer_onnx(twin, sample, name, input_range=(rq.lo, rq.hi), emitters=DIANA_EMITTERS)
