"""Every rule of the DORY ONNX dialect (docs/export-format.md), checked on a model: each broken rule is one message
naming the node or tensor. An empty list means DORY's Quantlab frontend, its Diana HW stage and its C generation take
the file (what the generated code then computes is a separate question: see the report's DORY findings)."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

ALLOWED_OPS = {"Conv", "Gemm", "MatMul", "Mul", "Add", "Div", "Floor", "Clip", "Constant", "Pad", "AveragePool",
               "GlobalAveragePool", "MaxPool", "Flatten", "Reshape", "Cast", "Shape", "Gather", "Unsqueeze", "Squeeze",
               "Concat", "Sigmoid", "LogSoftmax"}
AVERAGE_POOLS = ("AveragePool", "GlobalAveragePool")
REQUANT_CHAIN = ("Mul", "Add", "Div", "Floor", "Clip")
RESIDUAL_ATTRIBUTES = (*(f"{side}_{what}" for side in ("in1", "in2", "out")
                         for what in ("mul", "add", "shift", "rq", "n_levels")), "out_signed")
CONV_ATTRIBUTES = ("kernel_shape", "pads", "strides", "group")
ADC_ATTRIBUTES = {"adc_min": -32, "adc_max": 31, "adc_rows": 1152}
STORAGE_BITS = 8


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Model:
    """Indexes of one model: producers, consumers, constant values."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.constants = {n.output[0]: numpy_helper.to_array(_attributes(n)["value"])
                          for n in model.graph.node if n.op_type == "Constant"}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def const(self, name: str) -> np.ndarray | None:
        return self.initializers.get(name, self.constants.get(name))

    def only_consumer(self, node: onnx.NodeProto) -> onnx.NodeProto | None:
        consumers = self.consumers.get(node.output[0], [])
        return consumers[0] if len(consumers) == 1 else None


def check_dory_onnx(model: onnx.ModelProto) -> list[str]:
    """Every violation of the DORY dialect in ``model``, as messages naming the node or tensor."""
    m = _Model(model)
    problems = _check_header(model) + _check_names(m) + _check_initializers(m)
    for node in model.graph.node:
        label = f"node '{node.output[0]}' ({node.op_type})"
        if node.op_type not in ALLOWED_OPS:
            problems.append(f"{label}: operator {node.op_type} is not in DORY's whitelist.")
            continue
        attrs = _attributes(node)
        if node.op_type in ("Gemm", "MatMul"):
            problems.append(f"{label}: DORY's Diana back end pads 4-D weights only; write a linear layer as a Conv "
                            f"whose kernel covers its whole input.")
        if node.op_type == "Conv":
            problems += _check_conv(m, node, attrs, label)
        if node.op_type in (*AVERAGE_POOLS, "MaxPool") and attrs.get("weight_bits") != 8:
            problems.append(f"{label}: pooling needs attribute weight_bits = 8.")
        if node.op_type in AVERAGE_POOLS:
            problems += _check_requant_chain(m, node, label, scalar=True)
            if any(attrs.get("pads", [0])) and attrs.get("count_include_pad") != 1:
                problems.append(f"{label}: a padded AveragePool needs count_include_pad = 1 (DIANA divides every "
                                f"window by kh * kw).")
        if node.op_type == "Add" and all(m.const(i) is None for i in node.input):
            problems += _check_residual_add(m, node, attrs, label)
        if node.op_type == "Clip":
            problems += _check_clip(attrs, label)
    return problems


def _check_header(model: onnx.ModelProto) -> list[str]:
    problems = []
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != 10:
        problems.append(f"opset must be 10, got {opsets}.")
    if model.ir_version not in (6, 7):
        problems.append(f"ir_version must be 6 or 7, got {model.ir_version}.")
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        return problems + [f"the graph must have exactly one input, got {len(inputs)}."]
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        dtype = onnx.TensorProto.DataType.Name(tensor.elem_type)
        problems.append(f"input '{inputs[0].name}' must be float, got {dtype}.")
    if len(dims) != 4 or None in dims or dims[0] != 1:
        problems.append(f"input '{inputs[0].name}' must be static NCHW with batch 1, got shape {dims}.")
    return problems


def _check_names(m: _Model) -> list[str]:
    """Tensors between nodes are decimal strings that increase in topological order."""
    problems, last = [], -1
    for node in m.graph.node:
        if node.op_type == "Constant":
            continue
        name = node.output[0]
        if not name.isdecimal():
            problems.append(f"node output '{name}' ({node.op_type}) is not a decimal string; DORY calls int() on it.")
            continue
        if int(name) <= last:
            problems.append(f"node output '{name}' ({node.op_type}) does not increase in topological order "
                            f"(after '{last}').")
        last = int(name)
    return problems


def _check_initializers(m: _Model) -> list[str]:
    problems = []
    biases = {n.input[2] for n in m.graph.node if n.op_type == "Conv" and len(n.input) > 2}
    for name, value in m.initializers.items():
        if name not in biases and "bias" in name:
            problems.append(f"initializer '{name}' contains 'bias' but is no Conv's bias; DORY would take it for one.")
        if name in biases and "bias" not in name:
            problems.append(f"initializer '{name}' is a Conv's bias but its name does not contain 'bias', by which "
                            f"DORY finds it.")
        if value.dtype.kind == "f" and not np.array_equal(value, np.round(value)):
            problems.append(f"initializer '{name}' holds non-integer values.")
    return problems


def _check_conv(m: _Model, node: onnx.NodeProto, attrs: dict, label: str) -> list[str]:
    problems = []
    missing = [a for a in CONV_ATTRIBUTES if a not in attrs]
    if missing:
        problems.append(f"{label}: missing attribute(s) {missing}.")
    elif len(attrs["pads"]) != 4:
        problems.append(f"{label}: pads must have 4 values, got {attrs['pads']}.")
    weight = m.const(node.input[1]) if len(node.input) > 1 else None
    if weight is None or weight.ndim != 4:
        return problems + [f"{label}: weights must be a 4-D initializer (a linear layer is a Conv over its whole "
                           f"input)."]
    bits, group = attrs.get("weight_bits"), attrs.get("group", 1)
    if bits == 8:
        if len(node.input) < 3 or m.const(node.input[2]) is None:
            problems.append(f"{label}: a digital Conv needs its bias as third input (int32 values, also when zero): "
                            f"DIANA's digital core reads it there.")
        if group != 1 and not (group == weight.shape[0] and weight.shape[1] == 1):
            problems.append(f"{label}: group {group} is neither 1 nor depthwise (group = input = output channels).")
    elif bits == 2:
        if len(node.input) > 2:
            problems.append(f"{label}: an analog Conv carries no bias input (its offset is in the requant Add).")
        if group != 1:
            problems.append(f"{label}: an analog Conv has group 1, got {group}.")
        if not isinstance(attrs.get("adc_shift"), int) or attrs["adc_shift"] < 0:
            problems.append(f"{label}: an analog Conv needs attribute adc_shift >= 0 (its ADC).")
        wrong = {k: attrs.get(k) for k, v in ADC_ATTRIBUTES.items() if attrs.get(k) != v}
        if wrong:
            problems.append(f"{label}: ADC attributes must be {ADC_ATTRIBUTES}, got {wrong}.")
    else:
        problems.append(f"{label}: attribute weight_bits must be 8 (digital) or 2 (analog), got {bits}.")
    return problems + _check_requant_chain(m, node, label, scalar=False)


def _check_requant_chain(m: _Model, node: onnx.NodeProto, label: str, scalar: bool) -> list[str]:
    """After ``node``: exactly Mul(const) -> Add(const) -> Div(power of two) -> Floor -> Clip, the constants [C,1,1]
    after a Conv (DORY's BNRelu) and scalars after a pool (DORY's Requant)."""
    problems, current = [], node
    for expected in REQUANT_CHAIN:
        nxt = m.only_consumer(current)
        if nxt is None or nxt.op_type != expected:
            got = "several readers" if nxt is None and m.consumers.get(current.output[0]) else \
                (nxt.op_type if nxt is not None else "nothing")
            return problems + [f"{label}: must be followed by Mul -> Add -> Div -> Floor -> Clip; after "
                               f"{current.op_type} '{current.output[0]}' comes {got}, not {expected}."]
        if expected in ("Mul", "Add"):
            const = next((m.const(i) for i in nxt.input if m.const(i) is not None), None)
            if scalar and (const is None or const.ndim != 0):
                problems.append(f"{label}: requant {expected} '{nxt.output[0]}' after a pool needs a scalar constant "
                                f"(shape []): DORY fuses a pool only with a scalar Requant.")
            if not scalar and (const is None or const.ndim != 3 or const.shape[1:] != (1, 1)):
                problems.append(f"{label}: requant {expected} '{nxt.output[0]}' needs a constant of shape [C, 1, 1].")
        if expected == "Div":
            divisor = m.const(nxt.input[1])
            if divisor is None or divisor.size != 1:
                problems.append(f"{label}: requant Div '{nxt.output[0]}' must divide by a scalar constant.")
            elif not (divisor.item() >= 1 and math.log2(divisor.item()).is_integer()):
                problems.append(f"{label}: requant Div '{nxt.output[0]}' divides by {divisor.item()}, not a power of "
                                f"two >= 1 (DORY keeps round(log2(divisor))).")
        current = nxt
    return problems


def _check_clip(attrs: dict, label: str) -> list[str]:
    if "min" not in attrs or "max" not in attrs:
        return [f"{label}: Clip needs min and max as attributes (opset-10 form)."]
    if attrs.get("out_bits") != STORAGE_BITS:
        return [f"{label}: Clip needs attribute out_bits = 8 (its storage: DIANA stores one byte per element, and "
                f"DORY's strides are elements x out_bits / 8), got {attrs.get('out_bits')}."]
    return []


def _check_residual_add(m: _Model, node: onnx.NodeProto, attrs: dict, label: str) -> list[str]:
    problems = []
    missing = [a for a in RESIDUAL_ATTRIBUTES if not isinstance(attrs.get(a), int)]
    if missing:
        problems.append(f"{label}: a residual Add needs integer attributes {missing}.")
    if attrs.get("add_bits") != 8:
        problems.append(f"{label}: a residual Add needs attribute add_bits = 8.")
    if attrs.get("weight_bits") != 8:
        problems.append(f"{label}: a residual Add needs attribute weight_bits = 8.")
    readers = [r.op_type for r in m.consumers.get(node.output[0], [])]
    if "Mul" in readers:
        problems.append(f"{label}: a residual Add is read directly by the next layer (its requantisation is in its "
                        f"out_* attributes); a requant chain after it makes DORY fuse an AdditionBNRelu that the "
                        f"Diana tiler cannot tile.")
    return problems
