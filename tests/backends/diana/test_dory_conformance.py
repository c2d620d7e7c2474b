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
        shape = () if channels is None else (channels, 1, 1)
        x = self.node("Mul", [x, self.init(f"{tag}_mul", np.ones(shape))], mult_bits=32)
        x = self.node("Add", [x, self.init(f"{tag}_add", np.zeros(shape))], add_bits=32)
        divisor = self.node("Constant", [], value=numpy_helper.from_array(np.array(2.0 ** shift, np.float32)))
        x = self.node("Div", [x, divisor])
        x = self.node("Floor", [x])
        return self.node("Clip", [x], min=lo, max=hi, out_bits=8)

    def conv(self, x, c_in, c_out, tag, k=3, analog=False):
        inputs = [x, self.init(f"{tag}_weight", np.ones((c_out, c_in, k, k)))]
        attrs = {"kernel_shape": [k, k], "pads": [k // 2] * 4, "strides": [1, 1], "dilations": [1, 1], "group": 1}
        if analog:
            attrs.update(weight_bits=2, adc_shift=3, adc_min=-32, adc_max=31, adc_rows=1152)
        else:
            inputs.append(self.init(f"{tag}_bias", np.zeros(c_out)))
            attrs["weight_bits"] = 8
        return self.requant(self.node("Conv", inputs, bias_bits=32, **attrs), c_out, tag)


RESIDUAL = {**{f"{side}_{what}": v for side in ("in1", "in2", "out")
               for what, v in (("mul", 1), ("add", 0), ("shift", 0), ("rq", 0), ("n_levels", 128))},
            "out_rq": 1, "out_shift": 1, "out_signed": 0}


def conforming_model() -> onnx.ModelProto:
    b = Builder()
    y = b.conv("0", 16, 16, "conv1")
    z = b.conv(y, 16, 16, "conv2", analog=True)
    s = b.node("Add", [y, z], add_bits=8, weight_bits=8, **RESIDUAL)
    s = b.node("MaxPool", [s], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], weight_bits=8)
    p = b.requant(b.node("GlobalAveragePool", [s], weight_bits=8), None, "pool", shift=0)
    out = b.conv(p, 16, 10, "fc", k=1)
    graph = oh.make_graph(b.nodes, "net", [oh.make_tensor_value_info("0", TensorProto.FLOAT, [1, 16, 8, 8])],
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


def _init(model, name):
    return next(i for i in model.graph.initializer if i.name == name)


def test_conforming_model_passes():
    assert check_dory_onnx(conforming_model()) == []


def _mutant(mutate):
    model = copy.deepcopy(conforming_model())
    mutate(model)
    return check_dory_onnx(model)


def _requant_after_add(m):
    """A Mul -> Add -> Div -> Floor -> Clip chain between the residual Add and the max pool."""
    add = _node(m, "Add", 2)
    pool = _node(m, "MaxPool")
    b = Builder()
    b.next = 1000
    out = b.requant(add.output[0], 16, "after_add")
    pool.input[0] = out
    position = list(m.graph.node).index(add) + 1
    for i, n in enumerate(b.nodes):
        m.graph.node.insert(position + i, n)
    m.graph.initializer.extend(b.inits)


def _conv_input(index, op="Conv"):
    def mutate(m):
        del _node(m, op, index).input[2:]
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.opset_import[0].__setattr__("version", 13), "opset must be 10"),
    (lambda m: setattr(m, "ir_version", 8), "ir_version must be 6 or 7, got 8"),
    (lambda m: m.graph.node[0].output.__setitem__(0, "conv_out") or
     _node(m, "Mul").input.__setitem__(0, "conv_out"), "node output 'conv_out' (Conv) is not a decimal string"),
    (lambda m: setattr(_node(m, "Floor"), "op_type", "Round"), "operator Round is not in DORY's whitelist"),
    (lambda m: _set_attr(_node(m, "Conv"), "weight_bits", None), "attribute weight_bits must be 8 (digital) or 2"),
    (lambda m: _set_attr(_node(m, "Conv"), "group", None), "missing attribute(s) ['group']"),
    (lambda m: _set_attr(_node(m, "Conv"), "pads", [1, 1]), "pads must have 4 values"),
    (_conv_input(0), "a digital Conv needs its bias as third input"),
    (lambda m: _node(m, "Conv", 1).input.append("conv1_bias"), "an analog Conv carries no bias input"),
    (lambda m: _set_attr(_node(m, "Conv", 1), "adc_shift", None), "an analog Conv needs attribute adc_shift"),
    (lambda m: _set_attr(_node(m, "Conv", 1), "adc_rows", 512), "ADC attributes must be"),
    (lambda m: _set_attr(_node(m, "Conv", 1), "group", 2), "an analog Conv has group 1, got 2"),
    (lambda m: _set_attr(_node(m, "Conv"), "group", 2), "group 2 is neither 1 nor depthwise"),
    (lambda m: _set_attr(_node(m, "Clip"), "out_bits", 7), "Clip needs attribute out_bits = 8"),
    (lambda m: _set_attr(_node(m, "Clip"), "max", None), "Clip needs min and max as attributes"),
    (lambda m: _set_attr(_node(m, "GlobalAveragePool"), "weight_bits", None), "pooling needs attribute weight_bits"),
    (lambda m: _set_attr(_node(m, "MaxPool"), "weight_bits", None), "pooling needs attribute weight_bits"),
    (lambda m: setattr(_node(m, "GlobalAveragePool"), "op_type", "AveragePool") or
     _set_attr(_node(m, "AveragePool"), "pads", [1, 1, 1, 1]), "a padded AveragePool needs count_include_pad = 1"),
    (lambda m: _init(m, "pool_mul").CopyFrom(numpy_helper.from_array(np.ones((16, 1, 1), np.float32), "pool_mul")),
     "after a pool needs a scalar constant"),
    (lambda m: _init(m, "conv1_mul").CopyFrom(numpy_helper.from_array(np.ones((), np.float32), "conv1_mul")),
     "needs a constant of shape [C, 1, 1]"),
    (lambda m: _set_attr(_node(m, "Add", 2), "in2_shift", None), "residual Add needs integer attributes ['in2_shift'"),
    (lambda m: _set_attr(_node(m, "Add", 2), "out_signed", None), "residual Add needs integer attributes ['out_si"),
    (lambda m: _set_attr(_node(m, "Add", 2), "add_bits", 32), "residual Add needs attribute add_bits = 8"),
    (lambda m: _set_attr(_node(m, "Add", 2), "weight_bits", None), "residual Add needs attribute weight_bits = 8"),
    (_requant_after_add, "a residual Add is read directly by the next layer"),
    (lambda m: _init(m, "conv1_weight").CopyFrom(numpy_helper.from_array(np.full((16, 16, 3, 3), 0.5, np.float32),
                                                                         "conv1_weight")),
     "initializer 'conv1_weight' holds non-integer values"),
    (lambda m: _init(m, "conv1_mul").__setattr__("name", "conv1_bias_mul") or
     _node(m, "Mul").input.__setitem__(1, "conv1_bias_mul"), "'conv1_bias_mul' contains 'bias' but is no Conv's"),
    (lambda m: _init(m, "conv1_bias").__setattr__("name", "conv1_offset") or
     _node(m, "Conv").input.__setitem__(2, "conv1_offset"), "is a Conv's bias but its name does not contain 'bias'"),
])
def test_each_rule_is_enforced(mutate, message):
    problems = _mutant(mutate)
    assert any(message in p for p in problems), problems


def test_requant_chain_order_and_divisor():
    def swap_floor_and_div(m):
        div, floor = _node(m, "Div"), _node(m, "Floor")
        div.op_type, floor.op_type = "Floor", "Div"

    problems = _mutant(swap_floor_and_div)
    assert any("must be followed by Mul -> Add -> Div -> Floor -> Clip" in p for p in problems)

    def odd_divisor(m):
        const = next(n for n in m.graph.node if n.op_type == "Constant")
        _set_attr(const, "value", numpy_helper.from_array(np.array(3.0, np.float32)))

    assert any("divides by 3.0, not a power of two" in p for p in _mutant(odd_divisor))


def test_classifier_as_gemm_is_refused():
    def gemm_head(m):
        conv = _node(m, "Conv", 2)
        conv.op_type = "Gemm"
        del conv.attribute[:]
        conv.attribute.extend([oh.make_attribute("weight_bits", 8), oh.make_attribute("bias_bits", 32)])
        _init(m, "fc_weight").CopyFrom(numpy_helper.from_array(np.ones((10, 16), np.float32), "fc_weight"))

    assert any("write a linear layer as a Conv" in p for p in _mutant(gemm_head))
