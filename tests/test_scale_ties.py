"""harmonise_scales: adds sum integers of one scale with no per-input multiplier, pools floor on their input's grid."""

import torch
from torch import nn

from quantlib.calibration import calibrate
from quantlib.editors.fake2true import to_exact
from quantlib.fake_quantisation import QuantisationSpec, quantize
from quantlib.modules import QHarmonisedAdd, QReLU
from quantlib.modules.average_pool import AveragePool2d
from quantlib.modules.true_quant import Requant
from quantlib.scales import clip_scales_pow2, quantise_biases


class Block(nn.Module):
    """relu(x) feeds an add directly (a tied input) and through a conv (a free input); then a pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0, self.conv1 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu, self.out_relu = nn.ReLU(), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.relu(self.conv0(x))
        return self.pool(self.out_relu(self.conv1(y) + y))


def _fake(model, x, spec=None):
    torch.manual_seed(0)
    return calibrate(quantize(model, x[:1], spec), [x])


def test_a_tied_input_and_the_free_one_share_the_scale_of_the_quantiser_before_the_add():
    x = torch.randn(8, 1, 6, 6)
    gm = _fake(Block(), x)
    add: QHarmonisedAdd = gm.get_submodule("add")
    relu: QReLU = gm.get_submodule("relu")
    scales = {q.scale.item() for q in add.input_quantisers} | {relu.scale.item()}
    assert len(scales) == 1
    assert add.input_quantisers[1].spec.qrange == relu.spec.qrange  # the tied input takes its source's range
    assert add.output_quantiser.scale.item() >= scales.pop()  # never a left shift
    assert gm.get_submodule("pool").scale.item() == add.output_quantiser.scale.item()


def test_the_common_scale_is_capped_by_the_output_scale_of_two_free_inputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(1, 2, 1, bias=False)

        def forward(self, x):
            return self.a(x) + self.b(x)

    model = Two()
    with torch.no_grad():
        model.a.weight.fill_(8.0)
        model.b.weight.fill_(-7.9)  # inputs up to 8 |x|, their sum only 0.1 |x|
    gm = _fake(model, torch.randn(16, 1, 4, 4))
    add = gm.get_submodule("add")
    out = add.output_quantiser.scale.item()
    assert [q.scale.item() for q in add.input_quantisers] == [out, out]


def test_after_pow2_every_add_input_is_read_as_it_is_and_every_pool_floors_on_its_input_grid():
    x = torch.randn(8, 1, 6, 6)
    gm = clip_scales_pow2(_fake(Block(), x))
    quantise_biases(gm, x[:1])
    exact = to_exact(gm, x[:1])
    modules = dict(exact.named_modules())
    add = next(n for n in exact.graph.nodes if n.op == "call_module" and type(modules[n.target]).__name__ == "Add")
    readers = [modules[a.target] for a in add.args]
    assert [type(r).__name__ for r in readers] == ["Requant", "Requant"]  # conv1's requant and relu's: no input rq
    out = modules[next(iter(add.users)).target]
    assert out.mul.item() == 1 and out.shift >= 0 and out.eps_in == readers[0].eps_out == readers[1].eps_out
    pool_requant = next(m for m in modules.values() if isinstance(m, Requant) and m.eps_in == m.eps_out
                        and m.shift == 0 and (m.lo, m.hi) == (out.lo, out.hi) and m is not out)
    assert pool_requant.mul.item() == 1


def test_nested_adds_form_one_group_of_two_input_adds():
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.relu(x)
            y = self.conv(x)
            y += x
            return torch.relu(torch.add(y, x))

    from quantlib.backends.diana.diana_module import DianaModule

    x = torch.randn(8, 2, 5, 5)
    dm = DianaModule.from_fp_model(Nested(), x[:1])
    dm.calibrate([x]).map_scales().clip_scales_pow2()
    adds = [m for m in dm.gm.modules() if isinstance(m, QHarmonisedAdd)]
    assert [a.n_inputs for a in adds] == [2, 2]
    first, second = adds
    common = first.input_quantisers[0].scale.item()
    assert {q.scale.item() for a in adds for q in a.input_quantisers} == {common}
    assert first.output_quantiser.scale.item() == common  # the first sum is an input of the second
    assert second.output_quantiser.scale.item() >= common


def test_a_pool_takes_the_scale_of_its_input_quantiser():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 2))
    gm = _fake(model, torch.randn(4, 1, 6, 6), QuantisationSpec())
    pool: AveragePool2d = gm.get_submodule("2")
    assert pool.scale.item() == gm.get_submodule("1").scale.item()
