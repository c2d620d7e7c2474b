"""Standard integer ONNX (opset 13) from an integer GraphModule.

Between layers tensors are int8 / uint8 (requantised activations) or int32 (accumulators); linear ops are
ConvInteger / MatMulInteger, which accumulate exactly in int32 whatever the fan-in; requantisations compute in
float64 (exact below 2**53): Cast -> Mul -> Add -> Div(2^shift) -> Floor -> Clip -> Cast. Only standard operators are
used, so onnxruntime runs the file as it is.

A requantisation whose 256 levels are not those of int8 or uint8 (a learned zero point: [-37, 218], say) is stored as
uint8 with a zero point, ``stored = value + zero_point``, as ONNX's own quantised tensors are; ConvInteger and
MatMulInteger take the zero point, and every other reader subtracts it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.checker
import onnx.helper as oh
import torch
import torch.fx as fx
from onnx import TensorProto
from torch import nn

from quantlib.backends.onnx.writer import save_atomically
from quantlib.errors import ExportError
from quantlib.graphs.tracing import with_shapes
from quantlib.graphs.value_preserving import is_reshape
from quantlib.modules.add import Add
from quantlib.modules.concat import Concat
from quantlib.modules.true_quant import Requant, ScaleTunnel, TrueAvgPool2d, TrueConv2d, TrueLinear

OPSET = 13
INT8, UINT8, INT32, INT64 = TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64
DOUBLE, FLOAT = TensorProto.DOUBLE, TensorProto.FLOAT
_NP = {INT8: np.int8, UINT8: np.uint8, INT32: np.int32, INT64: np.int64, DOUBLE: np.float64, FLOAT: np.float32}


def integer_type(lo: int, hi: int) -> int:
    """The narrowest ONNX integer type holding [lo, hi] among uint8, int8 and int32."""
    if 0 <= lo and hi <= 255:
        return UINT8
    if -128 <= lo and hi <= 127:
        return INT8
    return INT32


@dataclass
class OnnxGraphBuilder:
    """Accumulates nodes and initialisers; every tensor name is derived from the fx node that computes it."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    types: dict[str, int] = field(default_factory=dict)
    zero_points: dict[str, int] = field(default_factory=dict)  # tensors stored as value + zero point

    def const(self, name: str, value: np.ndarray | float | int, elem_type: int) -> str:
        array = np.asarray(value, dtype=_NP[elem_type])
        self.initializers.append(onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, elem_type: int, **attrs) -> str:
        self.nodes.append(oh.make_node(op_type, inputs, [output], name=output, **attrs))
        self.types[output] = elem_type
        return output

    def cast(self, name: str, to: int, output: str) -> str:
        return name if self.types[name] == to else self.op("Cast", [name], output, to, to=to)

    def values(self, name: str, to: int, output: str) -> str:
        """The integers tensor ``name`` holds, as type ``to``: cast, less its zero point if it is stored with one."""
        x = self.cast(name, to, f"{output}.cast" if name in self.zero_points else output)
        if name not in self.zero_points:
            return x
        return self.op("Sub", [x, self.const(f"{output}.zero_point", self.zero_points[name], to)], output, to)

    def keep_zero_point(self, source: str, output: str) -> str:
        """``output`` holds ``source``'s integers the way ``source`` stores them (a pool, a reshape)."""
        if source in self.zero_points:
            self.zero_points[output] = self.zero_points[source]
        return output


@dataclass(frozen=True)
class IntegerOnnx:
    """An exported model and, for every fx node that computes a layer, the name of its ONNX tensor."""

    model: onnx.ModelProto
    node_tensors: dict[str, str]
    zero_points: dict[str, int] = field(default_factory=dict)  # of the tensors stored as value + zero point


def _channel_shape(t: torch.Tensor, dims: int) -> np.ndarray:
    """A per-channel constant shaped to broadcast over an activation of ``dims`` dimensions ([C, 1, 1] for NCHW)."""
    a = t.detach().double().numpy()
    if a.size == 1:
        return a.reshape(())
    return a.reshape(-1, *([1] * (dims - 2)))


def _requant(b: OnnxGraphBuilder, x: str, m: Requant, name: str, dims: int) -> str:
    y = b.values(x, DOUBLE, f"{name}.in")
    if not bool((m.mul == 1).all()):
        y = b.op("Mul", [y, b.const(f"{name}.mul", _channel_shape(m.mul, dims), DOUBLE)], f"{name}.scaled", DOUBLE)
    if not bool((m.add == 0).all()):
        y = b.op("Add", [y, b.const(f"{name}.add", _channel_shape(m.add, dims), DOUBLE)], f"{name}.shifted", DOUBLE)
    if m.shift:
        y = b.op("Div", [y, b.const(f"{name}.div", 2.0 ** m.shift, DOUBLE)], f"{name}.divided", DOUBLE)
    y = b.op("Floor", [y], f"{name}.floor", DOUBLE)
    y = b.op("Clip", [y, b.const(f"{name}.lo", m.lo, DOUBLE), b.const(f"{name}.hi", m.hi, DOUBLE)],
             f"{name}.clip", DOUBLE)
    to = integer_type(m.lo, m.hi)
    if to == INT32 and m.hi - m.lo <= 255 and -255 <= m.lo <= 0:  # 256 levels off int8's and uint8's: a zero point
        b.zero_points[name] = -m.lo
        y = b.op("Add", [y, b.const(f"{name}.zero_point", float(-m.lo), DOUBLE)], f"{name}.stored", DOUBLE)
        to = UINT8
    return b.op("Cast", [y], name, to, to=to)


def eight_bit_input(b: OnnxGraphBuilder, x: str, node: fx.Node) -> str:
    """``x``, checked to be an 8-bit tensor as ConvInteger / MatMulInteger need (ExportError naming ``node``)."""
    if b.types[x] not in (INT8, UINT8):
        raise ExportError(f"Layer '{node.name}' reads '{node.args[0].name}', which is not an 8-bit tensor; standard "
                          f"integer ONNX (ConvInteger / MatMulInteger) needs 8-bit activations: quantise its input "
                          f"to at most 8 bits.")
    return x


def _layer_weights(m: TrueConv2d | TrueLinear, node: fx.Node) -> np.ndarray:
    """The integer weights of ``m``, checked to hold at most 256 levels per output channel (int8, or a zero point)."""
    w = m.weight.detach().numpy()
    per_channel = w.reshape(w.shape[0], -1)
    span = (per_channel.max(axis=1) - per_channel.min(axis=1)) // level_step(w.astype(np.int64))
    if span.max() > 255:
        c = int(span.argmax())
        raise ExportError(f"Layer '{node.name}' has weights in [{per_channel[c].min():.0f}, "
                          f"{per_channel[c].max():.0f}] in output channel {c}, more than 256 levels: use at most "
                          f"8-bit weights for ONNX export.")
    return w.astype(np.int64)


def _add_bias(b: OnnxGraphBuilder, acc: str, m: TrueConv2d | TrueLinear, name: str, dims: int) -> str:
    if m.bias is None:
        return b.op("Identity", [acc], name, INT32)
    bias = b.const(f"{name}.bias", _channel_shape(m.bias, dims).astype(np.int32), INT32)
    return b.op("Add", [acc, bias], name, INT32)


def _conv(b: OnnxGraphBuilder, node: fx.Node, m: TrueConv2d, inputs: list[str]) -> str:
    x = eight_bit_input(b, inputs[0], node)
    if isinstance(m.padding, str):
        raise ExportError(f"Layer '{node.name}' uses padding='{m.padding}'; give explicit padding for ONNX export.")
    acc = conv_integer(b, x, _layer_weights(m, node), f"{node.name}.acc", m.stride, m.padding, m.dilation, m.groups)
    return _add_bias(b, acc, m, node.name, 4)


def integer_weights(b: OnnxGraphBuilder, weight: np.ndarray, name: str, x_type: int) -> tuple[str, str]:
    """The int8 (or, if all are in [0, 255], uint8) ``weight`` and its zero point for an ``x_type`` input; int8
    weights for a uint8 input as uint8 with zero point 128: onnxruntime's u8 x s8 kernels add pairs of products in
    int16 on CPUs without VNNI and saturate beyond 2^15 (255 * 127 * 2), its u8 x u8 kernels do not."""
    if weight.min() < -128 or weight.max() > 127:
        return b.const(f"{name}.weight", weight.astype(np.uint8), UINT8), b.const(f"{name}.w_zero_point", 0, UINT8)
    if x_type != UINT8:
        return b.const(f"{name}.weight", weight.astype(np.int8), INT8), b.const(f"{name}.w_zero_point", 0, INT8)
    w = b.const(f"{name}.weight", (weight.astype(np.int16) + 128).astype(np.uint8), UINT8)
    return w, b.const(f"{name}.w_zero_point", 128, UINT8)


def level_step(weight: np.ndarray) -> int:
    """The largest step every output channel's integer weights are apart by from the channel's smallest (2 for
    DoReFa's odd levels; 1 in general)."""
    lows = weight.reshape(weight.shape[0], -1).min(axis=1, keepdims=True)
    return max(1, int(np.gcd.reduce((weight.reshape(weight.shape[0], -1) - lows).ravel())))


def with_channel_offsets(b: OnnxGraphBuilder, x: str, weight: np.ndarray, name: str, out_axis: int,
                         accumulate: Callable[[str, np.ndarray, str], str]) -> str:
    """``accumulate(x, weight, name)`` for weights beyond int8 whose output channels (along ``out_axis``) each hold at
    most 256 levels ``step`` apart (a learned zero point; DoReFa's odd levels): ``step * accumulate(x, (weight -
    low) / step)`` on uint8 weights plus ``low`` times ``accumulate(x, ones)``, the sum of the inputs each output
    reads; ``low`` the channel's smallest weight."""
    if weight.min() >= -128 and weight.max() <= 127:
        return accumulate(x, weight, name)
    low = weight.min(axis=tuple(d for d in range(weight.ndim) if d != out_axis), keepdims=True)
    step = level_step(np.moveaxis(weight, out_axis, 0))
    shifted = accumulate(x, (weight - low) // step, f"{name}.shifted")
    if step > 1:
        shifted = b.op("Mul", [shifted, b.const(f"{name}.step", step, INT32)], f"{name}.stepped", INT32)
    sums = accumulate(x, np.ones_like(weight), f"{name}.input_sums")
    low = low.reshape(-1, *([1] * (weight.ndim - 2))) if out_axis == 0 else low.reshape(-1)
    offset = b.op("Mul", [sums, b.const(f"{name}.low", low.astype(np.int32), INT32)], f"{name}.offset", INT32)
    return b.op("Add", [shifted, offset], name, INT32)


def conv_integer(b: OnnxGraphBuilder, x: str, weight: np.ndarray, name: str, stride, padding, dilation=(1, 1),
                 groups: int = 1) -> str:
    """An exact int32 ConvInteger of the 8-bit tensor ``x`` with integer ``weight`` (int8, or up to 256 levels per
    output channel); returns the accumulator's name."""
    return with_channel_offsets(b, x, weight, name, 0, lambda x, w, name: _conv_integer(
        b, x, w, name, stride, padding, dilation, groups))


def _conv_integer(b: OnnxGraphBuilder, x: str, weight: np.ndarray, name: str, stride, padding, dilation,
                  groups: int) -> str:
    w, zero_w = integer_weights(b, weight, name, b.types[x])
    zero_x = b.const(f"{name}.x_zero_point", b.zero_points.get(x, 0), b.types[x])
    pad = list(padding) if isinstance(padding, (tuple, list)) else [padding] * 2
    return b.op("ConvInteger", [x, w, zero_x, zero_w], name, INT32, kernel_shape=list(weight.shape[2:]),
                strides=list(stride), pads=pad + pad, dilations=list(dilation), group=groups)


def _linear(b: OnnxGraphBuilder, node: fx.Node, m: TrueLinear, inputs: list[str]) -> str:
    name = node.name
    x = eight_bit_input(b, inputs[0], node)
    acc = with_channel_offsets(b, x, _layer_weights(m, node).T.copy(), f"{name}.acc", 1,
                               lambda x, w, name: _matmul_integer(b, x, w, name))
    return _add_bias(b, acc, m, name, 2)


def _matmul_integer(b: OnnxGraphBuilder, x: str, weight: np.ndarray, name: str) -> str:
    w, zero_w = integer_weights(b, weight, name, b.types[x])
    zero_x = b.const(f"{name}.x_zero_point", b.zero_points.get(x, 0), b.types[x])
    return b.op("MatMulInteger", [x, w, zero_x, zero_w], name, INT32)


def _average_pool(b: OnnxGraphBuilder, node: fx.Node, m: TrueAvgPool2d, inputs: list[str]) -> str:
    shape = node.args[0].meta["tensor_meta"].shape
    x = inputs[0] if m.kernel_size is None else eight_bit_input(b, inputs[0], node)
    return average_pool(b, x, node.name, shape, m.kernel_size, m.stride, m.padding)


def average_pool(b: OnnxGraphBuilder, x: str, name: str, shape, kernel, stride, padding) -> str:
    """The exact average of the integer tensor ``x`` of ``shape``: the window sums in int32 (a depthwise ConvInteger
    of ones; ReduceSum over the whole map for ``kernel`` None), then one float64 division by the window size."""
    if kernel is None:
        x = b.values(x, INT32, f"{name}.in")
        total = b.op("ReduceSum", [x, b.const(f"{name}.axes", [2, 3], INT64)], f"{name}.sum", INT32, keepdims=1)
        window = shape[2] * shape[3]
    else:
        ones = np.ones((shape[1], 1, *kernel), np.int8)
        total = conv_integer(b, x, ones, f"{name}.sum", stride, padding, groups=shape[1])
        window = kernel[0] * kernel[1]
    total = b.cast(total, DOUBLE, f"{name}.sum_double")
    return b.op("Div", [total, b.const(f"{name}.window", float(window), DOUBLE)], name, DOUBLE)


def _tunnel(b: OnnxGraphBuilder, node: fx.Node, m: ScaleTunnel, inputs: list[str]) -> str:
    x = b.values(inputs[0], DOUBLE, f"{node.name}.in")
    factor = _channel_shape(m.factor, len(node.meta["tensor_meta"].shape))
    return b.op("Mul", [x, b.const(f"{node.name}.factor", factor, DOUBLE)], node.name, DOUBLE)


def _add(b: OnnxGraphBuilder, node: fx.Node, m: Add, inputs: list[str]) -> str:
    return b.op("Add", [b.values(x, INT32, f"{node.name}.in{i}") for i, x in enumerate(inputs)], node.name, INT32)


def _concat(b: OnnxGraphBuilder, node: fx.Node, m: Concat, inputs: list[str]) -> str:
    stored = {(b.types[x], b.zero_points.get(x)) for x in inputs}
    if len(stored) == 1:  # one type and zero point: joined as stored
        return b.keep_zero_point(inputs[0], b.op("Concat", inputs, node.name, b.types[inputs[0]], axis=m.dim))
    return b.op("Concat", [b.values(x, INT32, f"{node.name}.in{i}") for i, x in enumerate(inputs)], node.name, INT32,
                axis=m.dim)


def _max_pool(b: OnnxGraphBuilder, node: fx.Node, m: nn.MaxPool2d, inputs: list[str]) -> str:
    k, s, p, d = (v if isinstance(v, tuple) else (v, v) for v in (m.kernel_size, m.stride, m.padding, m.dilation))
    x = inputs[0] if b.types[inputs[0]] in (INT8, UINT8) else b.values(inputs[0], DOUBLE, f"{node.name}.in")
    return b.keep_zero_point(x, b.op("MaxPool", [x], node.name, b.types[x], kernel_shape=list(k), strides=list(s),
                                     pads=list(p) * 2, dilations=list(d), ceil_mode=int(m.ceil_mode)))


def _reshape(b: OnnxGraphBuilder, node: fx.Node, m: nn.Module | None, inputs: list[str]) -> str:
    shape = [0, *node.meta["tensor_meta"].shape[1:]]
    return b.keep_zero_point(inputs[0], b.op("Reshape", [inputs[0], b.const(f"{node.name}.shape", shape, INT64)],
                                             node.name, b.types[inputs[0]]))


Emitter = Callable[[OnnxGraphBuilder, fx.Node, nn.Module | None, list[str]], str]

EMITTERS: dict[type[nn.Module], Emitter] = {
    ScaleTunnel: _tunnel,
    Requant: lambda b, node, m, inputs: _requant(b, inputs[0], m, node.name, len(node.meta["tensor_meta"].shape)),
    TrueConv2d: _conv,
    TrueLinear: _linear,
    TrueAvgPool2d: _average_pool,
    Add: _add,
    Concat: _concat,
    nn.MaxPool2d: _max_pool,
    nn.Flatten: _reshape,
}
"""How each module of a generic integer graph becomes ONNX nodes; a target passes these with its own modules' added
(``quantlib.targets.Target.emitters``)."""


def _emit(b: OnnxGraphBuilder, node: fx.Node, module: nn.Module | None, inputs: list[str],
          emitters: Mapping[type[nn.Module], Emitter]) -> str:
    """The ONNX nodes computing ``node``; returns the name of its output tensor."""
    emitter = emitters.get(type(module)) if module is not None else None
    if emitter is None and node.op == "call_method" and is_reshape(node, {}):
        emitter = _reshape
    if emitter is None:
        what = type(module).__name__ if module is not None else f"{node.op} {node.target}"
        raise ExportError(f"Node '{node.name}' ({what}) has no standard integer ONNX form; integer graphs hold "
                          f"{', '.join(t.__name__ for t in emitters)} and flattening views.")
    return emitter(b, node, module, inputs)


def integer_onnx(gm: fx.GraphModule, example_input: torch.Tensor, name: str = "quantlib_integer",
                 input_range: tuple[int, int] | None = None,
                 emitters: Mapping[type[nn.Module], Emitter] = EMITTERS) -> IntegerOnnx:
    """Build (and check) the standard integer ONNX model of the integer GraphModule ``gm`` (its modules written by
    ``emitters``: a target's). With ``input_range`` the inputs are integers in that range (held in float tensors),
    cast to the narrowest integer type."""
    gm = with_shapes(gm, example_input)
    modules = dict(gm.named_modules())
    b = OnnxGraphBuilder()
    tensors: dict[fx.Node, str] = {}
    graph_inputs, graph_outputs = [], []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            shape = ["batch", *node.meta["tensor_meta"].shape[1:]]
            graph_inputs.append(oh.make_tensor_value_info(node.name, FLOAT, shape))
            b.types[node.name] = FLOAT
            tensors[node] = node.name
            if input_range is not None:
                to = integer_type(*input_range)
                tensors[node] = b.op("Cast", [node.name], f"{node.name}.integer", to, to=to)
        elif node.op == "output":
            results = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
            for i, r in enumerate(results):
                value = b.values(tensors[r], b.types[tensors[r]], f"output_{i}.value")
                out = b.op("Identity", [value], f"output_{i}", b.types[value])
                shape = ["batch", *r.meta["tensor_meta"].shape[1:]]
                graph_outputs.append(oh.make_tensor_value_info(out, b.types[out], shape))
        else:
            module = modules.get(node.target) if node.op == "call_module" else None
            inputs = [tensors[a] for a in node.args if isinstance(a, fx.Node)]
            tensors[node] = _emit(b, node, module, inputs, emitters)
    graph = oh.make_graph(b.nodes, name, graph_inputs, graph_outputs, b.initializers)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)], producer_name="quantlib",
                          producer_version="0.1.0")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    layer_tensors = {n.name: t for n, t in tensors.items() if n.op == "call_module"}
    zero_points = {t: b.zero_points[t] for t in layer_tensors.values() if t in b.zero_points}
    return IntegerOnnx(model, layer_tensors, zero_points)


def export_integer_onnx(gm: fx.GraphModule, example_input: torch.Tensor, path: str | os.PathLike,
                        emitters: Mapping[type[nn.Module], Emitter] = EMITTERS) -> IntegerOnnx:
    """Write the standard integer ONNX of ``gm`` to ``path`` (atomically; identical bytes on every export)."""
    exported = integer_onnx(gm, example_input, Path(path).stem, emitters=emitters)
    save_atomically(exported.model, path)
    return exported
