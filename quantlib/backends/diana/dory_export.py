"""The DORY dialect of an integer DIANA graph (dory-onnx.md): opset 10, decimal tensor names increasing in
topological order, every layer ``op -> Mul -> Add -> Div(2^s) -> Floor -> Clip`` with DORY's attributes, biases in
the requant Add, classifiers as convolutions on 4-D tensors. Not executable by onnxruntime (custom attributes); the
executable twin is written by ``twin.py``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx.helper as oh
import torch
import torch.fx as fx
from onnx import TensorProto, numpy_helper

from quantlib.backends.diana.hardware_layers import (
    HardwareGraph,
    HardwareLayer,
    is_pass_through,
    range_bits,
    requant_mul_add,
)
from quantlib.backends.diana.hardware_rules import pair
from quantlib.errors import ExportError
from quantlib.modules.true_quant import Requant

OPSET = 10
IR_VERSION = 6
DIGITAL_WEIGHT_BITS, ANALOG_WEIGHT_BITS, ACCUMULATOR_BITS = 8, 2, 32
FLOAT32_EXACT = 2 ** 24


class DoryBuilder:
    """Nodes and initialisers with every node output named by the next decimal number."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.last = 0

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self.last += 1
        name = str(self.last)
        self.nodes.append(oh.make_node(op_type, inputs, [name], name=f"{op_type}_{name}", **attrs))
        return name

    def init(self, name: str, value: np.ndarray) -> str:
        """A float32 initializer holding integers, which float32 holds exactly up to 2^24."""
        value = np.asarray(value, np.float64)
        if value.size and np.abs(value).max() > FLOAT32_EXACT:
            raise ExportError(f"DORY initializer '{name}' holds {np.abs(value).max():.0f}, beyond 2^24, which float32 "
                              f"cannot hold exactly; lower the layer's bias or output resolution.")
        self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def requant_chain(self, x: str, tag: str, mul: np.ndarray, add: np.ndarray, shift: int, lo: int, hi: int) -> str:
        """Mul(const [C,1,1]) -> Add(const [C,1,1]) -> Div(Constant 2^shift) -> Floor -> Clip(lo, hi)."""
        y = self.op("Mul", [x, self.init(f"{tag}_requant_mul", mul)], mult_bits=ACCUMULATOR_BITS)
        y = self.op("Add", [y, self.init(f"{tag}_requant_add", add)], add_bits=ACCUMULATOR_BITS)
        divisor = self.op("Constant", [], value=numpy_helper.from_array(np.asarray(2.0 ** shift, np.float32)))
        y = self.op("Div", [y, divisor])
        y = self.op("Floor", [y])
        return self.op("Clip", [y], min=float(lo), max=float(hi), out_bits=range_bits(lo, hi))


def _channels(value: torch.Tensor, channels: int) -> np.ndarray:
    """A per-channel or scalar integer tensor as a [C, 1, 1] array."""
    a = value.detach().double().reshape(-1).numpy()
    return np.broadcast_to(a, (channels,)).reshape(channels, 1, 1).copy()


def _ints(v) -> list[int]:
    return [int(i) for i in pair(v)]


def dory_onnx(integer: fx.GraphModule, hw: HardwareGraph, name: str) -> onnx.ModelProto:
    """The DORY-dialect model of ``integer`` (shapes annotated) split into the hardware layers ``hw``."""
    modules = dict(integer.named_modules())
    b = DoryBuilder()
    input_shape = [1, *hw.input_quantiser.meta["tensor_meta"].shape[1:]]
    tensors: dict[fx.Node, str] = {hw.input_quantiser: "0"}
    shapes: dict[fx.Node, list[int]] = {hw.input_quantiser: input_shape}
    by_op = {layer.op: layer for layer in hw.layers}
    for node in integer.graph.nodes:
        if node in by_op:
            layer = by_op[node]
            tensors[layer.output], shapes[layer.output] = _emit_layer(b, layer, modules, tensors, shapes)
        elif is_pass_through(node, modules) and node.args[0] in tensors:
            tensors[node], shapes[node] = tensors[node.args[0]], shapes[node.args[0]]
    last = hw.layers[-1].output
    graph = oh.make_graph(b.nodes, name, [oh.make_tensor_value_info("0", TensorProto.FLOAT, input_shape)],
                          [oh.make_tensor_value_info(tensors[last], TensorProto.FLOAT, shapes[last])],
                          b.initializers)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)], producer_name="quantlib")
    model.ir_version = IR_VERSION
    return model


def _emit_layer(b: DoryBuilder, layer: HardwareLayer, modules: dict, tensors: dict, shapes: dict
                ) -> tuple[str, list[int]]:
    op = modules[layer.op.target]
    requant: Requant | None = modules[layer.requant.target] if layer.requant is not None else None
    x, shape = tensors[layer.inputs[0]], shapes[layer.inputs[0]]
    tag = f"layer{layer.index}"  # initializer names: DORY reads 'weight' and 'bias' in them
    if layer.kind in ("conv", "analog_conv", "linear"):
        y, out_shape, channels = _emit_linear(b, layer, op, x, shape, tag)
        mul, add = (_channels(t, channels) for t in requant_mul_add(op, requant, channels))
        return b.requant_chain(y, tag, mul, add, requant.shift, requant.lo, requant.hi), out_shape
    if layer.kind == "maxpool":
        k, s, p = (_ints(v) for v in (op.kernel_size, op.stride, op.padding))
        out = layer.op.meta["tensor_meta"].shape
        return b.op("MaxPool", [x], kernel_shape=k, strides=s, pads=p * 2, weight_bits=8), [1, *out[1:]]
    channels = shape[1]
    if layer.kind == "pool":
        window = shape[2] * shape[3] if op.kernel_size is None else math.prod(op.kernel_size)
        if op.kernel_size is None:
            y = b.op("GlobalAveragePool", [x], weight_bits=8)
        else:
            y = b.op("AveragePool", [x], kernel_shape=list(op.kernel_size), strides=list(op.stride),
                     pads=list(op.padding) * 2, weight_bits=8)
        # DORY's pool averages; the integer graph sums: the requant multiplies the average back to the sum
        mul = _channels(requant.mul, channels) * window
        out = layer.op.meta["tensor_meta"].shape
        return b.requant_chain(y, tag, mul, _channels(requant.add, channels), requant.shift, requant.lo,
                               requant.hi), [1, *out[1:]]
    return _emit_add(b, layer, modules, tensors, requant, shape), shape


def _emit_linear(b: DoryBuilder, layer: HardwareLayer, op, x: str, shape: list[int], tag: str
                 ) -> tuple[str, list[int], int]:
    """Conv with DORY's attributes; a linear layer is a conv whose kernel covers its whole (4-D) input."""
    weight = op.weight.detach().double().numpy()
    bits = ANALOG_WEIGHT_BITS if layer.kind == "analog_conv" else DIGITAL_WEIGHT_BITS
    if layer.kind == "linear":
        _, c, h, w = shape
        if weight.shape[1] != c * h * w:
            raise ExportError(f"Layer '{layer.name}' reads {weight.shape[1]} features from a [{c}, {h}, {w}] tensor.")
        weight = weight.reshape(weight.shape[0], c, h, w)
        attrs = {"kernel_shape": [h, w], "pads": [0, 0, 0, 0], "strides": [1, 1], "dilations": [1, 1], "group": 1}
    else:
        pad = _ints(op.padding)
        attrs = {"kernel_shape": list(weight.shape[2:]), "pads": pad * 2, "strides": _ints(op.stride),
                 "dilations": _ints(getattr(op, "dilation", 1)), "group": getattr(op, "groups", 1)}
    y = b.op("Conv", [x, b.init(f"{tag}_weight", weight)], weight_bits=bits, bias_bits=ACCUMULATOR_BITS, **attrs)
    out = layer.op.meta["tensor_meta"].shape
    out_shape = [1, out[1], 1, 1] if layer.kind == "linear" else [1, *out[1:]]
    return y, out_shape, weight.shape[0]


def _emit_add(b: DoryBuilder, layer: HardwareLayer, modules: dict, tensors: dict, requant: Requant,
              shape: list[int]) -> str:
    """Add with DORY's residual attributes: per input the requantisation the add applies first, and the output's."""
    attrs = {"add_bits": 8, "weight_bits": 8}
    for side, source, rq_node in zip(("in1", "in2"), layer.inputs, layer.input_requants, strict=True):
        if rq_node is None:
            attrs.update({f"{side}_mul": 1, f"{side}_add": 0, f"{side}_shift": 0, f"{side}_rq": 0,
                          f"{side}_n_levels": _levels(source, modules)})
        else:
            attrs.update(_requant_attributes(side, modules[rq_node.target], rq_node.name))
    attrs.update(_requant_attributes("out", requant, layer.requant.name))
    y = b.op("Add", [tensors[s] for s in layer.inputs], **attrs)
    channels = shape[1]
    return b.requant_chain(y, f"layer{layer.index}", _channels(requant.mul, channels), _channels(requant.add, channels),
                           requant.shift, requant.lo, requant.hi)


def _requant_attributes(side: str, rq: Requant, name: str) -> dict[str, int]:
    if rq.mul.numel() != 1 or rq.add.numel() != 1:
        raise ExportError(f"Requantisation '{name}' of a residual add has one multiplier per channel; DORY's add "
                          f"takes one per input.")
    return {f"{side}_mul": int(rq.mul), f"{side}_add": int(rq.add), f"{side}_shift": rq.shift, f"{side}_rq": 1,
            f"{side}_n_levels": rq.hi - rq.lo + 1}


def _levels(node: fx.Node, modules: dict) -> int:
    module = modules.get(node.target) if node.op == "call_module" else None
    return module.hi - module.lo + 1 if isinstance(module, Requant) else 256
