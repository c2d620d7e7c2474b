import torch
from torch import nn

from quantlib.editors.base import FixedPoint, Rewriter
from quantlib.editors.canonicalise import canonicalise
from quantlib.editors.float2fake import (
    ACTIVATION_FUSER,
    AddTreeHarmoniser,
    Interposer,
    ModuleFilter,
    ModuleWiseConverter,
)
from quantlib.modules import Add, QConv2d, QHarmonisedAdd, QIdentity, QLinear, QReLU, QuantiserSpec

S8 = QuantiserSpec.from_spec({"qrange": {"bitwidth": 8, "signed": True}})
U7 = QuantiserSpec.from_spec({"qrange": {"bitwidth": 7, "signed": False}, "qop": "pact"})
T = QuantiserSpec.from_spec({"qrange": "ternary", "qop": "ternary"})


def _calls(gm):
    modules = dict(gm.named_modules())
    return [(n.target, type(modules[n.target]).__name__) for n in gm.graph.nodes if n.op == "call_module"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.relu(self.conv1(x))
        z = self.conv2(y) + y
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 1), 1))


def test_module_wise_converter_filters_and_first_rule_wins():
    gm = canonicalise(Net())
    out = ModuleWiseConverter([(ModuleFilter(names=("conv2",)), T),
                               (ModuleFilter(types=(nn.Conv2d,), exclude=("conv1",)), S8),
                               (ModuleFilter(types=(nn.Linear,), name_regex=r"he.d"), S8),
                               (ModuleFilter(types=(nn.ReLU,)), U7)])(gm)
    kinds = dict(_calls(out))
    assert kinds["conv1"] == "Conv2d" and kinds["conv2"] == "QConv2d" and kinds["head"] == "QLinear"
    assert kinds["relu"] == "QReLU"
    assert out.conv2.spec is T and out.head.spec is S8 and out.relu.spec is U7
    assert out.conv2.qualname == "conv2"
    assert torch.equal(out.conv2.weight, gm.conv2.weight)
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(out(x), gm(x))  # quantised modules compute in float until calibrated


def _fake(model, *editors):
    gm = ModuleWiseConverter([(ModuleFilter(types=(nn.Conv2d, nn.Linear)), S8),
                              (ModuleFilter(types=(nn.ReLU,)), U7)])(canonicalise(model))
    for editor in editors:
        gm = editor(gm)
    return gm


def test_interposer_quantises_inputs_and_off_grid_producers_once():
    net = Net()
    gm = _fake(net, AddTreeHarmoniser(S8, S8), Interposer(S8))
    assert _calls(gm) == [("x_quantiser", "QIdentity"), ("conv1", "QConv2d"), ("relu", "QReLU"),
                          ("conv2", "QConv2d"), ("add", "QHarmonisedAdd"), ("avgpool", "AveragePool2d"),
                          ("flatten", "Flatten"), ("head", "QLinear")]
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(gm(x), net(x), rtol=0, atol=1e-6)  # uncalibrated quantisers compute in float


def test_interposer_shares_one_quantiser_between_all_readers_of_an_accumulator():
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(y) + y

    gm = _fake(Fork(), Interposer(S8))
    nodes = {n.name: n for n in gm.graph.nodes}
    assert [u.name for u in nodes["a"].users] == ["a_quantiser"]
    assert sorted(u.name for u in nodes["a_quantiser"].users) == ["add_1", "b"]


def test_interposer_requantises_an_accumulator_read_by_a_pool():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 1), nn.AvgPool2d(2))
    gm = _fake(model, Interposer(S8))
    assert [k for _, k in _calls(gm)] == ["QIdentity", "QConv2d", "QIdentity", "MaxPool2d", "QConv2d", "QIdentity",
                                          "AveragePool2d"]  # the pool floors on its input's grid: no quantiser after


def test_interposer_sees_through_max_pool_and_flatten():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2))
    gm = _fake(model, Interposer(S8))
    assert [k for _, k in _calls(gm)] == ["QIdentity", "QConv2d", "QReLU", "MaxPool2d", "Flatten", "QLinear"]


def test_add_tree_becomes_one_harmonised_add_with_all_inputs():
    class Three(nn.Module):
        def forward(self, a, b, c):
            return torch.relu(a + b + c)

    gm = AddTreeHarmoniser(S8, S8)(canonicalise(Three()))
    assert not [m for m in gm.modules() if isinstance(m, Add)]
    [(name, kind)] = [c for c in _calls(gm) if c[1] == "QHarmonisedAdd"]
    node = next(n for n in gm.graph.nodes if n.target == name)
    assert [a.name for a in node.args] == ["a", "b", "c"] and gm.get_submodule(name).n_inputs == 3
    xs = [torch.randn(4) for _ in range(3)]
    assert torch.allclose(gm(*xs), torch.relu(xs[0] + xs[1] + xs[2]))


def test_activation_fuser_folds_relu_into_the_add_and_drops_redundant_quantisers():
    gm = _fake(Net(), AddTreeHarmoniser(S8, S8), Interposer(S8))

    class AddThenReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x, y):
            return self.relu(x + y)

    fused = FixedPoint(Rewriter(ACTIVATION_FUSER))(_fake(AddThenReLU(), AddTreeHarmoniser(S8, S8)))
    assert [k for _, k in _calls(fused)] == ["QHarmonisedAdd"]
    add = next(m for m in fused.modules() if isinstance(m, QHarmonisedAdd))
    assert isinstance(add.output_quantiser, QReLU) and add.output_quantiser.qualname == "add.output_quantiser"
    x, y = torch.randn(5), torch.randn(5)
    assert torch.equal(fused(x, y), torch.relu(x + y))
    assert _calls(FixedPoint(Rewriter(ACTIVATION_FUSER))(gm)) == _calls(gm)  # nothing to fuse in Net


def test_activation_fuser_keeps_the_tighter_of_two_chained_quantisers():
    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.q1, self.r, self.q2, self.q3 = QIdentity(S8), QReLU(U7), QIdentity(S8), QIdentity(S8)

        def forward(self, x):
            return self.q3(self.q2(self.r(self.q1(x))))

    gm = FixedPoint(Rewriter(ACTIVATION_FUSER))(canonicalise(Chain()))
    assert _calls(gm) == [("r", "QReLU")]


def test_generic_linear_modules_are_quantised_classes():
    assert issubclass(QConv2d, nn.Conv2d) and issubclass(QLinear, nn.Linear)
