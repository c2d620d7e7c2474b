import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib.editors.base import Rewriter
from quantlib.editors.canonicalise import FUNCTIONAL_TO_MODULAR, FUNCTIONALISE_INPLACE
from quantlib.graphs import trace
from quantlib.modules import Add
from quantlib.modules.average_pool import AveragePool2d


def _convert(model, example=None):
    gm = trace(model, example)
    return Rewriter(FUNCTIONAL_TO_MODULAR)(Rewriter(FUNCTIONALISE_INPLACE)(gm))


class Single(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("fn, expected", [
    (F.relu, nn.ReLU()),
    (torch.relu, nn.ReLU()),
    (lambda x: x.relu(), nn.ReLU()),
    (lambda x: x.relu_(), nn.ReLU()),
    (lambda x: F.relu(x, inplace=True), nn.ReLU()),
    (F.relu6, nn.ReLU6()),
    (lambda x: F.leaky_relu(x, 0.2), nn.LeakyReLU(0.2)),
    (lambda x: F.hardtanh(x, -2.0, 3.0), nn.Hardtanh(-2.0, 3.0)),
    (lambda x: F.max_pool2d(x, 3, 2, 1), nn.MaxPool2d(3, 2, 1)),
    (lambda x: F.avg_pool2d(x, 2), AveragePool2d(2)),
    (lambda x: F.adaptive_avg_pool2d(x, (1, 1)), AveragePool2d()),
    (lambda x: F.adaptive_avg_pool2d(x, 2), AveragePool2d(output_size=(2, 2))),
    (lambda x: x.mean((2, 3)), AveragePool2d(keepdim=False)),
    (lambda x: x.mean([-2, -1], keepdim=True), AveragePool2d()),
    (lambda x: torch.mean(x, dim=(3, 2)), AveragePool2d(keepdim=False)),
    (lambda x: torch.clamp(x, 0, 6), nn.ReLU6()),
    (lambda x: x.clamp(min=0.0, max=6.0), nn.ReLU6()),
    (lambda x: x.clamp(min=0), nn.ReLU()),
    (lambda x: torch.flatten(x, 1), nn.Flatten(1, -1)),
    (lambda x: x.flatten(1), nn.Flatten(1, -1)),
    (lambda x: x.view(x.size(0), -1), nn.Flatten(1, -1)),
    (lambda x: x.reshape(x.shape[0], -1), nn.Flatten(1, -1)),
    (lambda x: x.view(x.size()[0], -1), nn.Flatten(1, -1)),
])
def test_each_spelling_becomes_the_equivalent_module(fn, expected):
    model = Single(fn)
    gm = _convert(model)
    calls = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    assert len(calls) == 1 and calls[0].op == "call_module"
    module = gm.get_submodule(calls[0].target)
    assert type(module) is type(expected) and repr(module) == repr(expected)
    x = torch.randn(2, 3, 8, 8)
    if isinstance(expected, AveragePool2d):  # the exact mean: torch's float32 average may differ in its last bit
        torch.testing.assert_close(gm(x), model(x.clone()), rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(gm(x), model(x.clone()))


def test_means_over_other_dimensions_stay_functional():
    gm = _convert(Single(lambda x: x.mean((1, 2))))
    assert [n.target for n in gm.graph.nodes if n.op == "call_method"] == ["mean"]


@pytest.mark.parametrize("fn", [operator.add, torch.add, lambda x, y: x.add(y)])
def test_tensor_additions_become_add_modules(fn):
    class Two(nn.Module):
        def forward(self, x, y):
            return fn(x, y)

    gm = _convert(Two())
    [add] = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert isinstance(gm.get_submodule(add.target), Add)
    assert [a.name for a in add.args] == ["x", "y"]


def test_scalar_additions_and_scaled_adds_stay_functional():
    class Scalars(nn.Module):
        def forward(self, x, y):
            return x + 1, torch.add(x, y, alpha=2), x.view(x.size(0) + 0, -1)

    gm = _convert(Scalars())
    assert not [n for n in gm.graph.nodes if n.op == "call_module"]


def test_view_that_is_not_a_flatten_stays_unless_shapes_prove_it():
    class Views(nn.Module):
        def forward(self, x):
            return x.view(-1, 48), x.view(2, 3, 16)

    gm = _convert(Views())
    assert [n.target for n in gm.graph.nodes if n.op == "call_method"] == ["view", "view"]
    gm = _convert(Views(), torch.randn(2, 3, 4, 4))
    assert [n.target for n in gm.graph.nodes if n.op == "call_method"] == ["view"]
    assert [type(m).__name__ for n, m in gm.named_children()] == ["Flatten"]


def test_pool_with_traced_kernel_size_is_left_alone():
    class Traced(nn.Module):
        def forward(self, x):
            return F.avg_pool2d(x, x.size(3))

    gm = _convert(Traced())
    assert any(n.op == "call_function" and n.target is F.avg_pool2d for n in gm.graph.nodes)


def test_new_modules_live_beside_the_code_that_called_them():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()  # name taken: the functional relu must not replace it

        def forward(self, x):
            return F.relu(self.relu(x) + x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            return F.relu(self.block(x))

    gm = _convert(Net())
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == [
        "block.relu", "block.add", "block.relu_1", "relu"]
    x = torch.randn(3, 4)
    assert torch.equal(gm(x), Net()(x))


def test_unused_size_queries_are_erased():
    gm = _convert(Single(lambda x: x.view(x.size(0), -1)))
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_module", "output"]
