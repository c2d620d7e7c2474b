"""DIANA's layer-kind table: every kind is met by the zoo's models, and a node of no kind is refused naming them."""

import pytest
import torch
import torch.fx as fx
from torch import nn

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.backends.diana.hardware_layers import hardware_layers
from quantlib.backends.diana.layer_kinds import DIANA_LAYER_KINDS
from quantlib.errors import ExportError
from quantlib.zoo import ZOO, build


def _integer(name, analog="auto"):
    x = torch.randn(4, *ZOO[name].input_shape, generator=torch.Generator().manual_seed(0))
    dm = DianaModule.from_fp_model(build(name, seed=0), x[:1], analog=analog)
    return dm.calibrate([x]).map_scales([x]).clip_scales_pow2().map_to_hw().integrize()


def test_every_kind_of_the_table_is_met_and_each_op_type_is_one_kind():
    assert len({k.op for k in DIANA_LAYER_KINDS}) == len({k.name for k in DIANA_LAYER_KINDS}) == 6
    met = {layer.kind.name for name in ("mobilenet_diana", "ds_cnn", "vgg11")
           for layer in hardware_layers(_integer(name).integer, DIANA_LAYER_KINDS).layers}
    met |= {layer.kind.name for layer in hardware_layers(_integer("resnet20").integer, DIANA_LAYER_KINDS).layers}
    assert met == {k.name for k in DIANA_LAYER_KINDS}


def test_a_node_of_no_kind_is_refused_naming_the_kinds():
    integer = _integer("digits_cnn", analog="none").integer
    out = next(iter(integer.graph.find_nodes(op="output")))
    with integer.graph.inserting_before(out):
        integer.add_submodule("gelu", nn.GELU())
        gelu = integer.graph.call_module("gelu", (out.args[0],))
    out.args = (gelu,)
    with pytest.raises(ExportError, match=r"Node 'gelu' \(GELU\) is not a DIANA layer; the chip runs these kinds of "
                                          r"layer: conv, analog_conv, linear, pool, add, maxpool\."):
        hardware_layers(fx.GraphModule(integer, integer.graph), DIANA_LAYER_KINDS)
