import torch
from torch import nn

from quantlib.graphs import trace
from quantlib.graphs.value_kinds import tensor_valued_nodes


class Net(nn.Module):
    def forward(self, x):
        n = x.size(0)
        h = x.shape[1] + 1
        y = x + x
        return y.view(n, -1) * h


def test_size_queries_and_their_arithmetic_are_numbers():
    gm = trace(Net())
    names = {n.name for n in tensor_valued_nodes(gm)}
    assert {"x", "add_1", "view", "mul"} <= names
    assert not names & {"size", "getattr_1", "getitem", "add"}


def test_shape_annotations_decide_when_present():
    gm = trace(Net(), torch.randn(2, 3))
    names = {n.name for n in tensor_valued_nodes(gm)}
    assert "size" not in names and "view" in names
