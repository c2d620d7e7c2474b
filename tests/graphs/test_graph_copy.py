"""graph_copy: a new graph over the same modules; the exact editors build on it and leave the fake model as it was."""

import copy

import torch
import torch.fx as fx
from torch import nn

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.graphs.graph_copy import graph_copy
from quantlib.modules.true_quant import Requant
from quantlib.zoo import digits_cnn


def test_the_copy_shares_leaf_modules_and_replacing_one_leaves_the_original():
    gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.Flatten())))
    copied = graph_copy(gm)
    assert copied.get_submodule("0") is gm.get_submodule("0")
    assert copied.graph is not gm.graph and [n.name for n in copied.graph.nodes] == [n.name for n in gm.graph.nodes]
    copied.add_submodule("1.0", nn.ReLU6())
    assert type(gm.get_submodule("1.0")) is nn.ReLU and type(copied.get_submodule("1.0")) is nn.ReLU6
    next(iter(copied.graph.nodes)).meta["scale"] = 1.0
    assert "scale" not in next(iter(gm.graph.nodes)).meta


def test_a_graph_that_reads_a_module_and_its_parameter_gets_a_deep_copy():
    class ReadsWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.conv(x) * self.conv.weight.sum()

    gm = fx.symbolic_trace(ReadsWeight())
    copied = graph_copy(gm)
    assert copied.get_submodule("conv") is not gm.get_submodule("conv")
    assert torch.equal(copied.get_submodule("conv").weight, gm.get_submodule("conv").weight)


def test_the_exact_model_leaves_every_value_and_module_of_the_fake_model_as_it_was():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    dm = DianaModule.from_fp_model(digits_cnn(), x[:1], analog="auto")
    dm.calibrate([x]).map_scales([x]).clip_scales_pow2().map_to_hw()
    assert dm.choice.analog  # an analog layer, a digital one and an add: every exact editor runs
    modules = dict(dm.gm.named_modules())
    state = copy.deepcopy(dm.gm.state_dict())
    before = dm(x)
    exact = dm.exact_model()
    assert any(isinstance(m, Requant) for m in exact.modules())
    assert dict(dm.gm.named_modules()) == modules
    assert dm.gm.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) if isinstance(v, torch.Tensor) else v == state[k]
               for k, v in dm.gm.state_dict().items())
    assert torch.equal(dm(x), before) and torch.equal(exact(x), before)
