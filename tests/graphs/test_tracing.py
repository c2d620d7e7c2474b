import pytest
import torch
import torch.fx as fx
from torch import nn

from quantlib.errors import TraceError
from quantlib.graphs import annotate_shapes, leaf_module, trace
from quantlib.modules import Add
from quantlib.zoo import control_flow_net
from quantlib.zoo.control_flow_net import GatedBlock


def test_control_flow_raises_trace_error_naming_module_and_line():
    with pytest.raises(TraceError) as info:
        trace(control_flow_net())
    message = str(info.value)
    assert "module 'body.1' (GatedBlock)" in message
    assert "control_flow_net.py:15: if x.mean() > 0:" in message
    assert "leaf_modules=['body.1']" in message
    assert "concrete_args" in message


def test_leaf_by_name_and_by_type_makes_control_flow_traceable():
    model = control_flow_net().eval()
    x = torch.randn(2, 3, 8, 8)
    for leaves in (["body.1"], [GatedBlock]):
        gm = trace(model, leaf_modules=leaves)
        targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
        assert "body.1" in targets
        assert torch.equal(gm(x), model(x))


def test_quantlib_modules_are_leaves():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.add = Add()

        def forward(self, x):
            return self.add(x, x)

    gm = trace(Net())
    assert [(n.op, n.target) for n in gm.graph.nodes] == [("placeholder", "x"), ("call_module", "add"),
                                                         ("output", "output")]


def test_leaf_module_decorator_registers_new_type():
    @leaf_module
    class Opaque(nn.Module):
        def forward(self, x):
            return torch.relu(x) * 2

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.o = Opaque()

        def forward(self, x):
            return self.o(x)

    ops = [n.op for n in trace(Net()).graph.nodes]
    assert ops == ["placeholder", "call_module", "output"]


def test_example_input_annotates_shapes_without_touching_batchnorm_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten()).train()
    gm = trace(model, torch.randn(2, 3, 6, 6))
    shapes = {n.name: tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if n.op != "output"}
    assert shapes == {"input_1": (2, 3, 6, 6), "_0": (2, 4, 4, 4), "_1": (2, 4, 4, 4), "_2": (2, 64)}
    assert torch.equal(model[1].running_mean, torch.zeros(4))
    assert model.training and model[1].training


def test_trace_returns_graph_module_sharing_nothing_broken():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    gm = trace(model)
    assert isinstance(gm, fx.GraphModule)
    x = torch.randn(5, 4)
    assert torch.equal(gm(x), model(x))


def test_annotate_shapes_accepts_tuple_of_inputs():
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    gm = trace(Two())
    annotate_shapes(gm, (torch.zeros(2, 3), torch.zeros(2, 3)))
    out = [n for n in gm.graph.nodes if n.op == "call_function"][0]
    assert tuple(out.meta["tensor_meta"].shape) == (2, 3)
