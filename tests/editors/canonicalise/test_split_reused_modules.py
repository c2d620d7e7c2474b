import logging

import torch
from torch import nn

from quantlib.editors.base import Rewriter
from quantlib.editors.canonicalise import SPLIT_REUSED_MODULES
from quantlib.graphs import trace


class Reuse(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.relu = nn.ReLU()
        self.relu_1 = nn.Tanh()  # occupies the first candidate name

    def forward(self, x):
        x = self.relu(self.conv(x))
        x = self.relu(self.conv(x))
        return self.relu_1(self.relu(x))


def test_each_call_site_gets_its_own_module(caplog):
    model = Reuse()
    with caplog.at_level(logging.WARNING):
        gm = Rewriter(SPLIT_REUSED_MODULES)(trace(model))
    targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert targets == ["conv", "relu", "conv_1", "relu_2", "relu_3", "relu_1"]
    assert len(set(targets)) == len(targets)
    assert gm.conv is not gm.conv_1 and torch.equal(gm.conv.weight, gm.conv_1.weight)
    x = torch.randn(1, 2, 3, 3)
    assert torch.equal(gm(x), model(x))
    assert "Module 'conv' is called 2 times" in caplog.text
    assert "'relu'" not in caplog.text  # no warning for a parameterless module
