"""The DORY conformance checker accepts a hand-written conforming model and names every rule a mutant breaks."""

import copy

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto, numpy_helper

from quantlib.backends.diana.dory_conformance import check_dory_onnx


class Builder:
    """Numbered tensors in topological order, as DORY wants them."""

    def __init__(self):
        self.nodes, self.inits, self.next = [], [], 1

    def name(self) -> str:
        self.next += 1
        return str(self.next - 1)

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def node(self, op, inputs, **attrs):
        out = self.name()
        self.nodes.append(oh.make_node(op, inputs, [out], **attrs))
        return out

    def requant(self, x, channels, tag, shift=4, lo=0, hi=127):
        x = self.node("Mul", [x, self.init(f"{tag}_mul", np.ones((channels, 1, 1)))], mult_bits=32)
        x = self.node("Add", [x, self.init(f"{tag}_add", np.zeros((channels, 1, 1)))], add_bits=32)
        divisor = f"{tag}_div"
        self.nodes.append(oh.make_node("Constant", [], [divisor], value=numpy_helper.from_array(
            np.array(2.0 ** shift, np.float32))))
        x = self.node("Div", [x, divisor])
        x = self.node("Floor", [x])
        return self.node("Clip", [x], min=lo, max=hi, out_bits=int(np.log2(hi - lo + 1)))

    def conv(self, x, c_in, c_out, tag, k=3, bits=8):
        w = self.init(f"{tag}_weight", np.ones((c_out, c_in, k, k)))
        y = self.node("Conv", [x, w], weight_bits=bits, bias_bits=32, kernel_shape=[k, k], pads=[k // 2] * 4,
                      strides=[1, 1], dilations=[1, 1], group=1)
        return self.requant(y, c_out, tag)


RESIDUAL = {f"{side}_{what}": 1 for side in ("in1", "in2", "out") for what in ("mul", "add", "shift", "rq",
                                                                                "n_levels")}


def conforming_model() -> onnx.ModelProto:
    b = Builder()
    x = "0"
    y = b.conv(x, 4, 4, "conv1")
    z = b.conv(y, 4, 4, "conv2", bits=2)
    s = b.node("Add", [y, z], add_bits=8, weight_bits=8, **RESIDUAL)
    s = b.requant(s, 4, "add")
    p = b.node("GlobalAveragePool", [s], weight_bits=8)
    out = b.conv(p, 4, 10, "fc", k=1)
    graph = oh.make_graph(b.nodes, "net", [oh.make_tensor_value_info("0", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [oh.make_tensor_value_info(out, TensorProto.FLOAT, [1, 10, 1, 1])], b.inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 10)])
    model.ir_version = 6
    return model


def _node(model, op, index=0):
    return [n for n in model.graph.node if n.op_type == op][index]


def _set_attr(node, name, value):
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + ([oh.make_attribute(name, value)] if value is not None else []))


def test_conforming_model_passes():
    assert check_dory_onnx(conforming_model()) == []


def _mutant(mutate):
    model = copy.deepcopy(conforming_model())
    mutate(model)
    return check_dory_onnx(model)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.opset_import[0].__setattr__("version", 13), "opset must be 10"),
    (lambda m: setattr(m, "ir_version", 8), "ir_version must be 6 or 7, got 8"),
    (lambda m: m.graph.node[0].output.__setitem__(0, "conv_out") or
     _node(m, "Mul").input.__setitem__(0, "conv_out"), "node output 'conv_out' (Conv) is not a decimal string"),
    (lambda m: setattr(_node(m, "Floor"), "op_type", "Round"),
     "operator Round is not in DORY's whitelist"),
    (lambda m: _set_attr(_node(m, "Conv"), "weight_bits", None), "attribute weight_bits must be 8 (digital) or 2"),
    (lambda m: _set_attr(_node(m, "Conv"), "bias_bits", 16), "attribute bias_bits must be 32, got 16"),
    (lambda m: _set_attr(_node(m, "Mul"), "mult_bits", None), "needs attribute mult_bits = 32"),
    (lambda m: _set_attr(_node(m, "Add"), "add_bits", None), "needs attribute add_bits = 32"),
    (lambda m: _set_attr(_node(m, "Clip"), "out_bits", 8), "Clip [0, 127] needs attribute out_bits = "
                                                          "log2(max - min + 1), got 8"),
    (lambda m: _set_attr(_node(m, "Clip"), "max", None), "Clip needs min and max as attributes"),
    (lambda m: _set_attr(_node(m, "GlobalAveragePool"), "weight_bits", None), "pooling needs attribute weight_bits"),
    (lambda m: _set_attr(_node(m, "Add", 2), "in2_shift", None), "residual Add needs integer attributes ['in2_shift'"),
    (lambda m: _set_attr(_node(m, "Add", 2), "add_bits", 32), "residual Add needs attribute add_bits = 8"),
    (lambda m: m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((4, 4, 3, 3), 0.5, np.float32),
                                                                       "conv1_weight")),
     "initializer 'conv1_weight' holds non-integer values"),
    (lambda m: m.graph.initializer[1].__setattr__("name", "conv1_bias_mul") or
     _node(m, "Mul").input.__setitem__(1, "conv1_bias_mul"), "'conv1_bias_mul' contains 'bias' but is not a bias"),
])
def test_each_rule_is_enforced(mutate, message):
    problems = _mutant(mutate)
    assert any(message in p for p in problems), problems


def test_requant_chain_order_divisor_and_bias_input():
    def swap_floor_and_div(m):
        div, floor = _node(m, "Div"), _node(m, "Floor")
        div.op_type, floor.op_type = "Floor", "Div"

    problems = _mutant(swap_floor_and_div)
    assert any("must be followed by Mul -> Add -> Div -> Floor -> Clip" in p for p in problems)

    def odd_divisor(m):
        const = next(n for n in m.graph.node if n.op_type == "Constant")
        _set_attr(const, "value", numpy_helper.from_array(np.array(3.0, np.float32)))

    assert any("divides by 3.0, not a power of two" in p for p in _mutant(odd_divisor))

    def conv_with_bias(m):
        _node(m, "Conv").input.append("conv1_bias")
        m.graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.float32), "conv1_bias"))

    assert any("carries a bias input; the bias belongs in the requant Add" in p for p in _mutant(conv_with_bias))


def test_classifier_as_gemm_is_refused():
    def gemm_head(m):
        conv = _node(m, "Conv", 2)
        conv.op_type = "Gemm"
        del conv.attribute[:]
        conv.attribute.extend([oh.make_attribute("weight_bits", 8), oh.make_attribute("bias_bits", 32)])
        weight = next(i for i in m.graph.initializer if i.name == "fc_weight")
        weight.CopyFrom(numpy_helper.from_array(np.ones((10, 4), np.float32), "fc_weight"))

    assert any("weights must be a 4-D initializer (write a classifier as a 1x1 Conv)" in p for p in _mutant(gemm_head))
