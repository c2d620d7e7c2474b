"""What a DORY-dialect file computes, read independently of the model it came from: the file becomes standard ONNX
that onnxruntime runs, by the Quantlab conventions of docs/export-format.md. Every export checks with it that the
DORY file means its golden activations, integer for integer.

- Integers travel in float64 (exact below 2^53). A Conv reads its input as int8 or uint8 (as the Clip or Add that
  produced it declares) and accumulates exactly (ConvInteger); its third input, the bias, is added after.
- An analog Conv (``adc_*`` attributes) converts each tile of floor(adc_rows / (kh * kw)) input channels on its own:
  ``clip(floor(partial / 2^adc_shift), adc_min, adc_max)``; the tiles are summed.
- AveragePool / GlobalAveragePool is the exact ``sum / (kh * kw)``; Mul, Add, Div, Floor, Clip and MaxPool are what
  they say; ops DORY skips (Flatten, Reshape, Cast, ...) pass their input on.
- A residual Add with DORYAdder attributes: ``x_i' = in_i_rq ? clip(floor((x_i * in_i_mul + in_i_add) /
  2^in_i_shift), R_i) : x_i``; ``y = out_rq ? clip(floor(((x_1' + x_2') * out_mul + out_add) / 2^out_shift), R) :
  clip(x_1' + x_2', R)``, with R = [-n/2, n/2 - 1] (signed) or [0, n - 1] for n levels.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
from onnx import numpy_helper

from quantlib.backends.onnx.integer_export import (
    DOUBLE,
    FLOAT,
    INT8,
    INT64,
    UINT8,
    OnnxGraphBuilder,
    average_pool,
    conv_integer,
)
from quantlib.backends.onnx.verify import onnx_session
from quantlib.errors import ExportError

SKIPPED_OPS = ("Cast", "Flatten", "Reshape", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat")
OPSET = 13


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: oh.get_attribute_value(a) for a in node.attribute}


def _levels_range(n_levels: int, signed: int) -> tuple[int, int]:
    return (-(n_levels // 2), n_levels // 2 - 1) if signed else (0, n_levels - 1)


class _Reader:
    """Builds the standard graph node by node; ``t`` maps DORY tensor names to the graph's, ``signed`` records which
    8-bit tensors are signed, ``shapes`` the DORY tensors' shapes."""

    def __init__(self, model: onnx.ModelProto, input_signed: bool) -> None:
        inferred = onnx.shape_inference.infer_shapes(model)
        self.shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                       for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
        self.consts = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
        self.b = OnnxGraphBuilder()
        graph_input = model.graph.input[0].name
        self.b.types[graph_input] = FLOAT
        self.t = {graph_input: self.b.cast(graph_input, DOUBLE, "input.double")}
        self.signed = {graph_input: input_signed}

    def const(self, value, name: str) -> str:
        return self.b.const(name, np.asarray(value, np.float64), DOUBLE)

    def requant(self, x: str, mul, add, shift: int, lo: int, hi: int, name: str) -> str:
        b = self.b
        y = b.op("Mul", [x, self.const(mul, f"{name}.mul")], f"{name}.scaled", DOUBLE)
        y = b.op("Add", [y, self.const(add, f"{name}.add")], f"{name}.shifted", DOUBLE)
        y = b.op("Div", [y, self.const(2.0 ** shift, f"{name}.div")], f"{name}.divided", DOUBLE)
        y = b.op("Floor", [y], f"{name}.floor", DOUBLE)
        return self.clip(y, lo, hi, name)

    def clip(self, x: str, lo, hi, name: str) -> str:
        return self.b.op("Clip", [x, self.const(lo, f"{name}.lo"), self.const(hi, f"{name}.hi")], f"{name}.clip",
                         DOUBLE)

    def eight_bit(self, x: str, name: str) -> str:
        to = INT8 if self.signed.get(x, True) else UINT8
        return self.b.op("Cast", [self.t[x]], f"{name}.in8", to, to=to)

    def read(self, node: onnx.NodeProto) -> None:
        op, out, a = node.op_type, node.output[0], _attributes(node)
        ins = list(node.input)
        name = f"t{out}"
        if op == "Constant":
            self.consts[out] = numpy_helper.to_array(a["value"]).astype(np.float64)
            return
        if op in SKIPPED_OPS:
            self.t[out], self.signed[out] = self.t[ins[0]], self.signed.get(ins[0], True)
            return
        if op == "Conv":
            self.t[out] = self.conv(ins, a, name)
        elif op == "Add" and all(i not in self.consts for i in ins):
            self.t[out] = self.residual_add(ins, a, name)
            self.signed[out] = bool(a.get("out_signed", 1))
        elif op in ("Mul", "Add", "Div"):
            x, c = (ins[0], ins[1]) if ins[1] in self.consts else (ins[1], ins[0])
            self.t[out] = self.b.op(op, [self.t[x], self.const(self.consts[c], f"{name}.const")], name, DOUBLE)
        elif op == "Floor":
            self.t[out] = self.b.op("Floor", [self.t[ins[0]]], name, DOUBLE)
        elif op == "Clip":
            self.t[out] = self.clip(self.t[ins[0]], a["min"], a["max"], name)
            self.signed[out] = a["min"] < 0
        elif op == "MaxPool":
            attrs = {k: a[k] for k in ("kernel_shape", "strides", "pads", "ceil_mode", "dilations") if k in a}
            self.t[out] = self.b.op("MaxPool", [self.t[ins[0]]], name, DOUBLE, **attrs)
            self.signed[out] = self.signed.get(ins[0], True)
        elif op in ("AveragePool", "GlobalAveragePool"):
            shape = self.shapes[ins[0]]
            kernel = None if op == "GlobalAveragePool" else a["kernel_shape"]
            if any(a.get("pads", [0])) and not a.get("count_include_pad", 0):
                raise ExportError(f"DORY node '{out}' (AveragePool) pads without count_include_pad = 1: its border "
                                  f"windows divide by fewer values, which no integer pool of DIANA's computes.")
            x = self.eight_bit(ins[0], name) if kernel is not None else self.t[ins[0]]
            self.t[out] = average_pool(self.b, x, name, shape, kernel, a.get("strides", kernel),
                                       a.get("pads", [0, 0, 0, 0])[:2])
        else:
            raise ExportError(f"DORY node '{out}' ({op}) has no meaning in the Quantlab conventions.")

    def conv(self, ins: list[str], a: dict, name: str) -> str:
        b = self.b
        weight = self.consts[ins[1]]
        x = self.eight_bit(ins[0], name)
        geometry = (a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0])[:2], a.get("dilations", [1, 1]))
        if "adc_shift" in a:
            rows = a["adc_rows"] // (weight.shape[2] * weight.shape[3])
            total = None
            for i, start in enumerate(range(0, weight.shape[1], rows)):
                stop = min(start + rows, weight.shape[1])
                tag = f"{name}.tile{i}"
                ranges = [b.const(f"{tag}.{k}", [v], INT64) for k, v in (("starts", start), ("ends", stop),
                                                                          ("axes", 1))]
                part = b.op("Slice", [x, *ranges], f"{tag}.in", b.types[x])
                acc = conv_integer(b, part, weight[:, start:stop], f"{tag}.acc", *geometry)
                y = b.op("Div", [b.cast(acc, DOUBLE, f"{tag}.double"), self.const(2.0 ** a["adc_shift"], f"{tag}.d")],
                         f"{tag}.divided", DOUBLE)
                y = self.clip(b.op("Floor", [y], f"{tag}.floor", DOUBLE), a["adc_min"], a["adc_max"], tag)
                total = y if total is None else b.op("Add", [total, y], f"{tag}.sum", DOUBLE)
            return total
        acc = conv_integer(b, x, weight, f"{name}.acc", *geometry, a.get("group", 1))
        y = b.cast(acc, DOUBLE, f"{name}.double")
        if len(ins) > 2:
            y = b.op("Add", [y, self.const(self.consts[ins[2]].reshape(-1, 1, 1), f"{name}.bias")], name, DOUBLE)
        return y

    def residual_add(self, ins: list[str], a: dict, name: str) -> str:
        sides = []
        for i, side in enumerate(("in1", "in2")):
            x = self.t[ins[i]]
            if a[f"{side}_rq"]:
                lo, hi = _levels_range(a[f"{side}_n_levels"], a.get(f"{side}_signed", 1))
                x = self.requant(x, a[f"{side}_mul"], a[f"{side}_add"], a[f"{side}_shift"], lo, hi, f"{name}.{side}")
            sides.append(x)
        y = self.b.op("Add", sides, f"{name}.sum", DOUBLE)
        lo, hi = _levels_range(a["out_n_levels"], a.get("out_signed", 1))
        if a["out_rq"]:
            return self.requant(y, a["out_mul"], a["out_add"], a["out_shift"], lo, hi, f"{name}.out")
        return self.clip(y, lo, hi, f"{name}.out")


def interpret_dory(model: onnx.ModelProto, input_signed: bool, tensors: list[str]) -> onnx.ModelProto:
    """The standard-ONNX reading of the DORY file ``model`` (its integer input signed or not), whose outputs are the
    DORY tensors ``tensors`` (float64; the batch size is free)."""
    reader = _Reader(model, input_signed)
    for node in model.graph.node:
        reader.read(node)
    b = reader.b
    outputs = [b.op("Identity", [reader.t[name]], f"out.{name}", DOUBLE) for name in tensors]
    graph_input = model.graph.input[0]
    dims = ["batch", *[d.dim_value for d in graph_input.type.tensor_type.shape.dim][1:]]
    graph = oh.make_graph(b.nodes, f"{model.graph.name}_interpreted",
                          [oh.make_tensor_value_info(graph_input.name, FLOAT, dims)],
                          [oh.make_tensor_value_info(o, DOUBLE, None) for o in outputs], b.initializers)
    interpreted = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)], producer_name="quantlib")
    interpreted.ir_version = 8
    return interpreted


def run_dory(model: onnx.ModelProto, x: np.ndarray, input_signed: bool, tensors: list[str]) -> dict[str, np.ndarray]:
    """The values of the DORY tensors ``tensors`` for the integer inputs ``x`` ([N, C, H, W]), as the file means."""
    interpreted = interpret_dory(model, input_signed, tensors)
    values = onnx_session(interpreted).run(None, {model.graph.input[0].name: x.astype(np.float32)})
    return dict(zip(tensors, values, strict=True))
