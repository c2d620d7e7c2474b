"""Every rule of the DORY ONNX dialect (docs: dory-onnx.md), checked on a model: each broken rule is one message
naming the node or tensor. An empty list means DORY's Diana back end accepts the file."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

ALLOWED_OPS = {"Conv", "Gemm", "MatMul", "Mul", "Add", "Div", "Floor", "Clip", "Constant", "Pad", "AveragePool",
               "GlobalAveragePool", "MaxPool", "Flatten", "Reshape", "Cast", "Shape", "Gather", "Unsqueeze", "Squeeze",
               "Concat", "Sigmoid", "LogSoftmax"}
LINEAR_OPS = ("Conv", "Gemm", "MatMul")
POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool")
REQUANT_CHAIN = ("Mul", "Add", "Div", "Floor", "Clip")
RESIDUAL_ATTRIBUTES = tuple(f"{side}_{what}" for side in ("in1", "in2", "out")
                            for what in ("mul", "add", "shift", "rq", "n_levels"))
CONV_ATTRIBUTES = ("kernel_shape", "pads", "strides", "dilations", "group")


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
        if node.op_type in LINEAR_OPS:
            problems += _check_linear(m, node, attrs, label)
        if node.op_type in POOL_OPS and attrs.get("weight_bits") != 8:
            problems.append(f"{label}: pooling needs attribute weight_bits = 8.")
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
    linear_inputs = {n.input[1]: n for n in m.graph.node if n.op_type in LINEAR_OPS and len(n.input) > 1}
    for name, value in m.initializers.items():
        if name in linear_inputs and "weight" not in name:
            problems.append(f"initializer '{name}' holds weights of '{linear_inputs[name].output[0]}' but its name "
                            f"does not contain 'weight'.")
        if name not in linear_inputs and "bias" in name:
            problems.append(f"initializer '{name}' contains 'bias' but is not a bias; DORY would take it for one.")
        if value.dtype.kind == "f" and not np.array_equal(value, np.round(value)):
            problems.append(f"initializer '{name}' holds non-integer values.")
    return problems


def _check_linear(m: _Model, node: onnx.NodeProto, attrs: dict, label: str) -> list[str]:
    problems = []
    if attrs.get("weight_bits") not in (8, 2):
        problems.append(f"{label}: attribute weight_bits must be 8 (digital) or 2 (analog), got "
                        f"{attrs.get('weight_bits')}.")
    if attrs.get("bias_bits") != 32:
        problems.append(f"{label}: attribute bias_bits must be 32, got {attrs.get('bias_bits')}.")
    if len(node.input) > 2:
        problems.append(f"{label}: carries a bias input; the bias belongs in the requant Add.")
    weight = m.const(node.input[1]) if len(node.input) > 1 else None
    if weight is None or weight.ndim != 4:
        problems.append(f"{label}: weights must be a 4-D initializer (write a classifier as a 1x1 Conv).")
    if node.op_type == "Conv":
        missing = [a for a in CONV_ATTRIBUTES if a not in attrs]
        if missing:
            problems.append(f"{label}: missing attribute(s) {missing}.")
        elif len(attrs["pads"]) != 4:
            problems.append(f"{label}: pads must have 4 values, got {attrs['pads']}.")
    return problems + _check_requant_chain(m, node, label)


def _check_requant_chain(m: _Model, node: onnx.NodeProto, label: str) -> list[str]:
    """After ``node``: exactly Mul(const [C,1,1]) -> Add(const [C,1,1]) -> Div(Constant 2^s) -> Floor -> Clip."""
    problems, current = [], node
    for expected in REQUANT_CHAIN:
        nxt = m.only_consumer(current)
        if nxt is None or nxt.op_type != expected:
            got = "several readers" if nxt is None and m.consumers.get(current.output[0]) else \
                (nxt.op_type if nxt is not None else "nothing")
            return problems + [f"{label}: must be followed by Mul -> Add -> Div -> Floor -> Clip; after "
                               f"{current.op_type} '{current.output[0]}' comes {got}, not {expected}."]
        attrs = _attributes(nxt)
        if expected in ("Mul", "Add"):
            const = next((m.const(i) for i in nxt.input if m.const(i) is not None), None)
            if const is None or const.ndim != 3 or const.shape[1:] != (1, 1):
                problems.append(f"{label}: requant {expected} '{nxt.output[0]}' needs a constant of shape [C, 1, 1].")
            bits_name = "mult_bits" if expected == "Mul" else "add_bits"
            if attrs.get(bits_name) != 32:
                problems.append(f"{label}: requant {expected} '{nxt.output[0]}' needs attribute {bits_name} = 32.")
        if expected == "Div":
            divisor = m.constants.get(nxt.input[1])
            if divisor is None or divisor.size != 1:
                problems.append(f"{label}: requant Div '{nxt.output[0]}' must divide by a scalar Constant node.")
            elif not (divisor.item() >= 1 and math.log2(divisor.item()).is_integer()):
                problems.append(f"{label}: requant Div '{nxt.output[0]}' divides by {divisor.item()}, not a power of "
                                f"two >= 1.")
        current = nxt
    return problems


def _check_clip(attrs: dict, label: str) -> list[str]:
    if "min" not in attrs or "max" not in attrs:
        return [f"{label}: Clip needs min and max as attributes (opset-10 form)."]
    levels = attrs["max"] - attrs["min"] + 1
    bits = math.log2(levels) if levels > 0 else -1
    if not bits.is_integer() or attrs.get("out_bits") != int(bits):
        return [f"{label}: Clip [{attrs['min']}, {attrs['max']}] needs attribute out_bits = log2(max - min + 1), got "
                f"{attrs.get('out_bits')}."]
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
    return problems + _check_requant_chain(m, node, label)
