"""The DORY dialect of an integer DIANA graph (docs/export-format.md): opset 10, decimal tensor names increasing in
topological order, and each hardware layer in the one form DORY's Diana back end fuses and runs:

- digital conv / depthwise / linear: ``Conv(x, W, bias) -> Mul(1) -> Add(0) -> Div(2^s) -> Floor -> Clip`` (the bias
  is the Conv's third input, as DIANA's digital core adds it; Mul / Add are [C, 1, 1]);
- analog conv: ``Conv(x, W)[adc_*] -> Mul -> Add -> Div -> Floor -> Clip`` (the ADC as attributes; Mul / Add the
  post-ADC affine);
- average pool: ``AveragePool | GlobalAveragePool -> Mul(1) -> Add(0) -> Div(1) -> Floor -> Clip`` (scalars);
- max pool: ``MaxPool``;
- residual add: ``Add(x1, x2)`` with Quantlab's DORYAdder attributes, the output requantisation among them, read
  directly by the next layer.

Every Clip stores 8 bits (``out_bits = 8``), its range in min / max. Not executable by onnxruntime (custom
attributes); ``dory_interpreter.py`` reads it back into standard ONNX, and ``twin.py`` writes the executable twin.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import torch
import torch.fx as fx
from onnx import TensorProto, numpy_helper

from quantlib.backends.diana.analog_conv import ARRAY_ROWS
from quantlib.backends.diana.hardware_layers import HardwareGraph, HardwareLayer, requant_mul_add
from quantlib.backends.diana.hardware_rules import pair
from quantlib.backends.diana.true_analog_conv import ADC_HI, ADC_LO
from quantlib.editors.fake2true.requantiser import integer_range
from quantlib.errors import ExportError
from quantlib.graphs.value_preserving import is_reshape
from quantlib.modules.true_quant import Requant

OPSET = 10
IR_VERSION = 6
DIGITAL_WEIGHT_BITS, ANALOG_WEIGHT_BITS, ACCUMULATOR_BITS, STORAGE_BITS = 8, 2, 32, 8
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

    def init(self, name: str, value: np.ndarray, layer: str) -> str:
        """A float32 initializer holding integers, which float32 holds exactly up to 2^24."""
        value = np.asarray(value, np.float64)
        if value.size and np.abs(value).max() > FLOAT32_EXACT:
            raise ExportError(f"Layer '{layer}': its {name.partition('_')[2]} reaches {np.abs(value).max():.0f}, "
                              f"beyond 2^24, which DORY's float32 initializers cannot hold exactly; lower the "
                              f"resolution of the layer's input or weights.")
        self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def requant_chain(self, x: str, layer: HardwareLayer, mul: np.ndarray, add: np.ndarray, requant: Requant) -> str:
        """Mul(const) -> Add(const) -> Div(Constant 2^shift) -> Floor -> Clip(lo, hi), 8-bit storage."""
        tag = f"layer{layer.index}"
        y = self.op("Mul", [x, self.init(f"{tag}_requant_mul", mul, layer.name)], mult_bits=ACCUMULATOR_BITS)
        y = self.op("Add", [y, self.init(f"{tag}_requant_add", add, layer.name)], add_bits=ACCUMULATOR_BITS)
        divisor = self.op("Constant", [], value=numpy_helper.from_array(np.asarray(2.0 ** requant.shift, np.float32)))
        y = self.op("Div", [y, divisor])
        y = self.op("Floor", [y])
        return self.op("Clip", [y], min=float(requant.lo), max=float(requant.hi), out_bits=STORAGE_BITS)


def _channels(value: torch.Tensor, channels: int) -> np.ndarray:
    """A per-channel or scalar integer tensor as a [C, 1, 1] array."""
    a = value.detach().double().reshape(-1).numpy()
    return np.broadcast_to(a, (channels,)).reshape(channels, 1, 1).copy()


def _scalar(value: torch.Tensor, layer: HardwareLayer) -> np.ndarray:
    if value.numel() != 1:
        raise ExportError(f"Layer '{layer.name}' requantises per channel; DORY's pools take one multiplier and one "
                          f"offset (a scalar requant).")
    return np.asarray(float(value), np.float64)


def _ints(v) -> list[int]:
    return [int(i) for i in pair(v)]


def _as_4d(shape) -> list[int]:
    """DORY's tensors are [1, C, H, W]: a [1, F] feature vector is [1, F, 1, 1]."""
    shape = [1, *shape[1:]]
    return shape + [1] * (4 - len(shape))


def dory_onnx(integer: fx.GraphModule, hw: HardwareGraph, name: str) -> tuple[onnx.ModelProto, dict[int, str]]:
    """The DORY-dialect model of ``integer`` (shapes annotated) split into the hardware layers ``hw``, and for each
    layer index the DORY tensor that holds its output."""
    modules = dict(integer.named_modules())
    b = DoryBuilder()
    input_shape = _as_4d(hw.input_quantiser.meta["tensor_meta"].shape)
    tensors: dict[fx.Node, str] = {hw.input_quantiser: "0"}
    shapes: dict[fx.Node, list[int]] = {hw.input_quantiser: input_shape}
    by_op = {layer.op: layer for layer in hw.layers}
    outputs: dict[int, str] = {}
    for node in integer.graph.nodes:
        if node in by_op:
            layer = by_op[node]
            tensors[layer.output], shapes[layer.output] = layer.kind.emit(b, layer, modules, tensors, shapes)
            outputs[layer.index] = tensors[layer.output]
        elif is_reshape(node, modules) and node.args[0] in tensors:  # DORY's tensors are 4-D
            tensors[node], shapes[node] = tensors[node.args[0]], shapes[node.args[0]]
    last = hw.layers[-1].output
    graph = oh.make_graph(b.nodes, name, [oh.make_tensor_value_info("0", TensorProto.FLOAT, input_shape)],
                          [oh.make_tensor_value_info(tensors[last], TensorProto.FLOAT, shapes[last])],
                          b.initializers)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)], producer_name="quantlib")
    model.ir_version = IR_VERSION
    return model, outputs


Emitted = tuple[str, list[int]]
"""The DORY tensor that holds a layer's output, and its [1, C, H, W] shape."""


def emit_conv(b: DoryBuilder, layer: HardwareLayer, modules: dict, tensors: dict, shapes: dict) -> Emitted:
    """A digital conv: ``Conv(x, W, bias)`` and its requantisation."""
    op = modules[layer.op.target]
    weight = op.weight.detach().double().numpy()
    attrs = {"kernel_shape": list(weight.shape[2:]), "pads": _ints(op.padding) * 2, "strides": _ints(op.stride),
             "dilations": _ints(op.dilation), "group": op.groups}
    return _requantised_conv(b, layer, modules, tensors, _digital_conv(b, layer, op, tensors, weight, attrs))


def emit_linear(b: DoryBuilder, layer: HardwareLayer, modules: dict, tensors: dict, shapes: dict) -> Emitted:
    """A linear layer: a digital conv whose kernel covers its whole [1, C, H, W] input."""
    op = modules[layer.op.target]
    _, c, h, w = shapes[layer.inputs[0]]
    weight = op.weight.detach().double().numpy()
    if weight.shape[1] != c * h * w:
        raise ExportError(f"Layer '{layer.name}' reads {weight.shape[1]} features from a [{c}, {h}, {w}] tensor.")
    attrs = {"kernel_shape": [h, w], "pads": [0, 0, 0, 0], "strides": [1, 1], "dilations": [1, 1], "group": 1}
    conv = _digital_conv(b, layer, op, tensors, weight.reshape(weight.shape[0], c, h, w), attrs)
    return _requantised_conv(b, layer, modules, tensors, conv)


def emit_analog_conv(b: DoryBuilder, layer: HardwareLayer, modules: dict, tensors: dict, shapes: dict) -> Emitted:
    """An analog conv: ``Conv(x, W)`` with the ADC as attributes, then the post-ADC affine and requantisation."""
    op = modules[layer.op.target]
    weight = op.weight.detach().double().numpy()
    conv = b.op("Conv", [tensors[layer.inputs[0]], b.init(f"layer{layer.index}_weight", weight, layer.name)],
                bias_bits=ACCUMULATOR_BITS, kernel_shape=list(weight.shape[2:]), pads=_ints(op.padding) * 2,
                strides=_ints(op.stride), dilations=[1, 1], group=1, weight_bits=ANALOG_WEIGHT_BITS,
                adc_shift=op.adc_shift, adc_min=ADC_LO, adc_max=ADC_HI, adc_rows=ARRAY_ROWS)
    return _requantised_conv(b, layer, modules, tensors, conv)


def emit_average_pool(b: DoryBuilder, layer: HardwareLayer, modules: dict, tensors: dict, shapes: dict) -> Emitted:
    """``AveragePool | GlobalAveragePool`` and a scalar requantisation."""
    op, requant = modules[layer.op.target], modules[layer.requant.target]
    x = tensors[layer.inputs[0]]
    if op.kernel_size is None:
        y = b.op("GlobalAveragePool", [x], weight_bits=DIGITAL_WEIGHT_BITS)
    else:
        padded = {"count_include_pad": 1} if any(op.padding) else {}  # DIANA divides by kh * kw everywhere
        y = b.op("AveragePool", [x], kernel_shape=list(op.kernel_size), strides=list(op.stride),
                 pads=list(op.padding) * 2, weight_bits=DIGITAL_WEIGHT_BITS, **padded)
    y = b.requant_chain(y, layer, _scalar(requant.mul, layer), _scalar(requant.add, layer), requant)
    return y, _as_4d(layer.op.meta["tensor_meta"].shape)


def emit_max_pool(b: DoryBuilder, layer: HardwareLayer, modules: dict, tensors: dict, shapes: dict) -> Emitted:
    """``MaxPool`` (no requantisation: it keeps its input's integers)."""
    op = modules[layer.op.target]
    attrs = {"kernel_shape": _ints(op.kernel_size), "strides": _ints(op.stride), "pads": _ints(op.padding) * 2}
    if op.ceil_mode:
        attrs["ceil_mode"] = 1
    if _ints(op.dilation) != [1, 1]:
        attrs["dilations"] = _ints(op.dilation)
    y = b.op("MaxPool", [tensors[layer.inputs[0]]], weight_bits=DIGITAL_WEIGHT_BITS, **attrs)
    return y, _as_4d(layer.op.meta["tensor_meta"].shape)


def _digital_conv(b: DoryBuilder, layer: HardwareLayer, op, tensors: dict, weight: np.ndarray, attrs: dict) -> str:
    """``Conv(x, W, bias)``: DIANA's digital core adds the int32 bias (DORY finds it by 'bias' in its name)."""
    tag = f"layer{layer.index}"
    bias = np.zeros(weight.shape[0]) if op.bias is None else op.bias.detach().double().numpy()
    if np.abs(bias).max(initial=0) >= 2 ** (ACCUMULATOR_BITS - 1):
        raise ExportError(f"Layer '{layer.name}': its bias does not fit in int32.")
    inputs = [tensors[layer.inputs[0]], b.init(f"{tag}_weight", weight, layer.name), b.init(f"{tag}_bias", bias,
                                                                                             layer.name)]
    return b.op("Conv", inputs, bias_bits=ACCUMULATOR_BITS, weight_bits=DIGITAL_WEIGHT_BITS, **attrs)


def _requantised_conv(b: DoryBuilder, layer: HardwareLayer, modules: dict, tensors: dict, conv: str) -> Emitted:
    """A conv's output requantised per channel: ``Mul -> Add -> Div(2^s) -> Floor -> Clip``."""
    op, requant = modules[layer.op.target], modules[layer.requant.target]
    channels = op.weight.shape[0]
    mul, add = (_channels(t, channels) for t in requant_mul_add(op, requant, channels))
    out_shape = _as_4d(layer.op.meta["tensor_meta"].shape)
    return b.requant_chain(conv, layer, mul, add, requant), [1, channels, *out_shape[2:]]


def emit_add(b: DoryBuilder, layer: HardwareLayer, modules: dict, tensors: dict, shapes: dict) -> Emitted:
    """Add with Quantlab's DORYAdder attributes: per input the requantisation the add applies first (none on DIANA,
    whose adds read both inputs on one scale), and the output's; nothing after it."""
    attrs = {"add_bits": 8, "weight_bits": DIGITAL_WEIGHT_BITS}
    for side, source, rq_node in zip(("in1", "in2"), layer.inputs, layer.input_requants, strict=True):
        if rq_node is None:
            lo, hi = _range(source, modules)
            attrs.update({f"{side}_mul": 1, f"{side}_add": 0, f"{side}_shift": 0, f"{side}_rq": 0,
                          f"{side}_n_levels": hi - lo + 1, f"{side}_signed": int(lo < 0)})
        else:
            attrs.update(_requant_attributes(side, modules[rq_node.target], rq_node.name))
    attrs.update(_requant_attributes("out", modules[layer.requant.target], layer.requant.name))
    return b.op("Add", [tensors[s] for s in layer.inputs], **attrs), shapes[layer.inputs[0]]


def _requant_attributes(side: str, rq: Requant, name: str) -> dict[str, int]:
    if rq.mul.numel() != 1 or rq.add.numel() != 1:
        raise ExportError(f"Requantisation '{name}' of a residual add has one multiplier per channel; DORY's add "
                          f"takes one per input.")
    return {f"{side}_mul": int(rq.mul), f"{side}_add": int(rq.add), f"{side}_shift": rq.shift, f"{side}_rq": 1,
            f"{side}_n_levels": rq.hi - rq.lo + 1, f"{side}_signed": int(rq.lo < 0)}


def _range(node: fx.Node, modules: dict) -> tuple[int, int]:
    """The integer range of the values ``node`` carries (the requantisation that produced them)."""
    span = integer_range(node, modules)
    if span is None:
        raise ExportError(f"Residual add input '{node.name}' does not come from a requantisation.")
    return span
