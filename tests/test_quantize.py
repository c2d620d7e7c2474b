"""The generic entry point on every zoo model, and the accuracy of 8-bit fake-quantisation on the bundled digits."""

import pytest
import torch
from torch import nn

from quantlib.calibration import calibrate
from quantlib.data import digits_loaders
from quantlib.editors.canonicalise import canonicalise
from quantlib.editors.float2fake.grid import is_quantiser
from quantlib.errors import UnsupportedOpError
from quantlib.fake_quantisation import QuantisationSpec, quantize
from quantlib.modules import Add, QConv2d, QHarmonisedAdd, QIdentity, QLinear, QReLU
from quantlib.training import accuracy, train_epochs
from quantlib.verification import record
from quantlib.zoo import ZOO, build, digits_cnn


@pytest.fixture(scope="module", params=sorted(ZOO))
def fake_zoo_model(request):
    name = request.param
    model = build(name, seed=4)
    x = torch.randn(2, *ZOO[name].input_shape, generator=torch.Generator().manual_seed(5))
    return name, model, x, quantize(model, x)


def test_every_linear_op_quantised_every_add_harmonised_no_quantiser_fed_by_a_quantiser(fake_zoo_model):
    name, model, _, gm = fake_zoo_model
    modules = dict(gm.named_modules())
    calls = [n for n in gm.graph.nodes if n.op == "call_module"]
    canonical = canonicalise(model)
    n_linear_calls = sum(isinstance(canonical.get_submodule(n.target), (nn.Conv2d, nn.Linear))
                         for n in canonical.graph.nodes if n.op == "call_module")
    assert sum(isinstance(modules[n.target], (QConv2d, QLinear)) for n in calls) == n_linear_calls
    assert not [n for n in calls if type(modules[n.target]) in (nn.Conv2d, nn.Linear, Add)]
    assert not [m for m in gm.modules() if isinstance(m, Add)]
    for node in calls:
        if isinstance(modules[node.target], (QIdentity, QReLU)):
            assert not is_quantiser(node.args[0], modules), f"{name}: {node.name} fed by {node.args[0].name}"
    if name.startswith("resnet") or name == "mobilenetv2":
        assert any(isinstance(m, QHarmonisedAdd) for m in gm.modules())


def test_fake_model_computes_in_float_until_calibrated(fake_zoo_model):
    _, model, x, gm = fake_zoo_model
    with torch.no_grad():
        expected = model(x)
        assert (gm(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_top_level_entry_points():
    import quantlib

    assert quantlib.quantize is quantize and quantlib.calibrate is calibrate


def test_spec_errors_name_the_key():
    with pytest.raises(ValueError, match=r"key\(s\) \['bias'\] are not allowed"):
        QuantisationSpec.from_spec({"bias": {"qrange": {"bitwidth": 32}}})


@pytest.fixture(scope="module")
def trained_digits():
    torch.manual_seed(0)
    train, test = digits_loaders(seed=0)
    model = train_epochs(digits_cnn(), train, epochs=15, lr=3e-3)
    return model, train, test


def test_digits_8bit_per_tensor_loses_at_most_half_a_point(trained_digits):
    model, train, test = trained_digits
    float_acc = accuracy(model, test)
    gm = quantize(model, next(iter(train))[0])
    calibrate(gm, [x for x, _ in list(train)[:8]])
    fake_acc = accuracy(gm, test)
    assert float_acc > 97.0
    assert fake_acc >= float_acc - 0.5, (float_acc, fake_acc)
    assert all(q.is_quantised for q in gm.modules() if isinstance(q, (QIdentity, QReLU, QConv2d, QLinear)))


def test_fake_quantised_model_trains_with_any_optimiser(trained_digits):
    model, train, test = trained_digits
    gm = calibrate(quantize(model), [x for x, _ in list(train)[:4]])
    first_conv = gm.get_submodule("features.0")
    before = first_conv.weight.detach().clone()
    gm.train()
    optimiser = torch.optim.SGD(gm.parameters(), lr=0.01, momentum=0.9)
    for x, y in list(train)[:5]:
        optimiser.zero_grad()
        nn.functional.cross_entropy(gm(x), y).backward()
        optimiser.step()
    relus = {n.name: (n.args[0].name, gm.get_submodule(n.target)) for n in gm.graph.nodes
             if n.op == "call_module" and isinstance(gm.get_submodule(n.target), QReLU)}
    optimiser.zero_grad()
    nn.functional.cross_entropy(gm(10 * x), y).backward()  # far brighter than calibration: activations exceed clips
    inputs = record(gm, 10 * x, [source for source, _ in relus.values()])
    clipped = [r for source, r in relus.values() if bool((inputs[source] > r.clip_hi).any())]
    assert len(clipped) >= 2 and all(float(r.clip_hi.grad.abs().sum()) > 0 for r in clipped)  # PACT learns clips
    assert not torch.equal(first_conv.weight, before)
    assert accuracy(gm, test) > 95.0


def test_multi_input_models_calibrate_from_tuples():
    class TwoIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    x, y = torch.randn(8, 4), torch.randn(8, 4)
    gm = calibrate(quantize(TwoIn(), (x, y)), [(x, y)])
    quantisers = [m for m in gm.modules() if isinstance(m, QIdentity)]
    assert {q.qualname for q in quantisers} >= {"x_quantiser", "y_quantiser"}
    assert all(q.is_quantised for q in quantisers)


def test_linear_ops_without_a_quantised_form_are_refused_before_quantisation():
    model = nn.Sequential(nn.Conv1d(2, 2, 1), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(UnsupportedOpError, match=r"1 construct\(s\) of this model have no form on quantlib's "
                       r"integer path:\n  - 0 \(nn.Conv1d\) at <no source line>\n      quantlib's integer path has "
                       r"no 1-D, 3-D or transposed convolution. Fix: use nn.Conv2d"):
        quantize(model, torch.randn(1, 2, 4))
