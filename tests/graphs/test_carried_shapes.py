"""Editors give the nodes they make the shapes of the values they hold, so that shape propagation runs only where
shapes are missing: at every stage of the DIANA flow the carried shapes are those shape propagation finds."""

import pytest
import torch

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.graphs.graph_copy import graph_copy
from quantlib.graphs.tracing import annotate_shapes, has_shapes
from quantlib.zoo import ZOO, build


def _propagated(gm, x):
    fresh = graph_copy(gm)
    for n in fresh.graph.nodes:
        n.meta.pop("tensor_meta", None)
    annotate_shapes(fresh, x)
    return {n.name: n.meta["tensor_meta"].shape for n in fresh.graph.nodes if n.op != "output"}


def _carried(gm):
    return {n.name: n.meta["tensor_meta"].shape for n in gm.graph.nodes if n.op != "output"}


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_diana", "ds_cnn", "digits_cnn"])
def test_the_shapes_carried_from_model_to_integer_are_those_shape_propagation_finds(name):
    x = torch.randn(4, *ZOO[name].input_shape, generator=torch.Generator().manual_seed(0))
    dm = DianaModule.from_fp_model(build(name, seed=0), x[:1], analog="auto")
    assert has_shapes(dm.gm, x[:1]) and _carried(dm.gm) == _propagated(dm.gm, x[:1])
    dm.calibrate([x]).map_scales([x]).clip_scales_pow2().map_to_hw().integrize()
    assert has_shapes(dm.integer, dm.reference())
    assert _carried(dm.integer) == _propagated(dm.integer, dm.reference())


def test_shapes_of_another_input_are_propagated_again():
    x = torch.randn(2, 3, 32, 32)
    dm = DianaModule.from_fp_model(build("resnet20", seed=0), x[:1])
    assert has_shapes(dm.gm, x[:1]) and not has_shapes(dm.gm, torch.randn(1, 3, 16, 16))
