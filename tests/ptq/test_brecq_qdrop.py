"""BRECQ and QDrop: residual blocks are reconstruction units, QDrop's drop mask has the configured rate, every unit is
reconstructed towards the float model's values, and block reconstruction lowers the unit's output error below
round-to-nearest's; the Fisher weights are the KL gradient at the unit's output."""

import pytest
import torch

import quantlib.ptq.prepare as prepare_module
from quantlib import ptq
from quantlib.modules.qactivations import QIdentity
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.ptq import brecq
from quantlib.ptq.brecq import _dropper
from quantlib.ptq.capture import float_mode
from quantlib.ptq.units import reconstruction_units
from quantlib.specs import QuantiserSpec
from quantlib.verification import record
from quantlib.zoo import ZOO, build, digits_cnn


def test_residual_blocks_are_units_and_other_layers_units_of_their_own():
    gm = ptq.quantize(build("resnet8", seed=0), [torch.randn(8, 3, 32, 32)], "rtn")
    units = reconstruction_units(gm)
    assert [u.name for u in units] == ["conv1", "layer1.0", "layer2.0", "layer3.0", "linear"]
    assert units[2].layers == ("layer2.0.conv1", "layer2.0.conv2", "layer2.0.shortcut.0")
    assert (units[1].source.name, units[1].sink.name) == ("relu_7", "layer1_0_add")
    x = torch.randn(4, 3, 32, 32)
    values = record(gm, x, [units[2].source.name, units[2].sink.name])
    with torch.no_grad():
        assert torch.equal(units[2].graph(values[units[2].source.name]), values[units[2].sink.name])


@pytest.mark.parametrize("probability", [0.25, 0.5])
def test_the_drop_mask_replaces_the_configured_share_of_elements_by_their_float_values(probability):
    q = QIdentity(QuantiserSpec.from_spec({"qrange": {"bitwidth": 2, "signed": True}, "qop": "round"}), "q")
    q.set_clip_bounds(torch.tensor(-1.0), torch.tensor(1.0))
    q.is_quantised = True
    q.register_forward_hook(_dropper(probability, torch.Generator().manual_seed(0)))
    x = torch.rand(200_000) * 0.9 + 0.05  # never on the grid: a dropped element differs from its quantised value
    out = q(x)
    dropped = float((out == x).float().mean())
    assert dropped == pytest.approx(probability, abs=0.005)
    kept = out != x
    torch.testing.assert_close(out[kept], q.call_op(x)[kept])


@pytest.mark.parametrize("method", ["brecq", "qdrop"])
def test_every_unit_learns_towards_the_float_models_input_and_output(method, monkeypatch):
    """Not those of the model in float mode once earlier units are done: without kept float parameters (as in a
    DianaModule) float mode keeps their rounded weights, so ``float_values`` must record them all first."""
    torch.manual_seed(0)
    model = digits_cnn().eval()
    batches = [torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))]
    seen, learn = {}, brecq._learn

    def spy(unit, layers, steps, data, *args):
        seen.setdefault(unit.name, data)
        return learn(unit, layers, steps, data, *args)

    monkeypatch.setattr(brecq, "_learn", spy)
    monkeypatch.setattr(prepare_module, "remember_float_parameters", lambda gm: None)
    options = dict(w_bits=2, a_bits=4)
    ptq.quantize(model, batches, method, iters=20, act_iters=5, **options)
    rtn = ptq.quantize(model, batches, "rtn", ranges="mse", **options)  # the same graph, its weights still float
    units = reconstruction_units(rtn)
    with float_mode(rtn):
        values = record(rtn, batches[0], [name for u in units for name in (u.source.name, u.sink.name)])
    assert list(seen) == [u.name for u in units] == ["features.0", "features.3", "features.7", "classifier"]
    for u in units:
        torch.testing.assert_close(seen[u.name].x_fp, values[u.source.name], rtol=0, atol=0)
        torch.testing.assert_close(seen[u.name].target, values[u.sink.name], rtol=0, atol=0)


def _unit_error(gm, unit_name, batches):
    unit = next(u for u in reconstruction_units(gm) if u.name == unit_name)
    x = batches[0]
    quantised = record(gm, x, [unit.source.name])[unit.source.name]
    with float_mode(gm):
        target = record(gm, x, [unit.sink.name])[unit.sink.name]
    with torch.no_grad():
        return float((unit.graph(quantised) - target).pow(2).sum(1).mean())


@pytest.mark.parametrize("method", ["brecq", "qdrop"])
def test_block_reconstruction_lowers_the_blocks_error_below_round_to_nearest(method):
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(64, *ZOO["resnet8"].input_shape, generator=g)]
    model = build("resnet8", seed=0)
    options = dict(w_bits=3, a_bits=8)  # the rounding dominates the error
    rtn = ptq.quantize(model, batches, "rtn", ranges="mse", **options)
    learned = ptq.quantize(model, batches, method, iters=200, act_iters=50, batch_size=8, **options)
    assert _unit_error(learned, "layer1.0", batches) < 0.8 * _unit_error(rtn, "layer1.0", batches)


def test_fisher_weights_of_the_last_unit_are_the_kl_gradient_of_the_logits_plus_one():
    import torch.nn.functional as F

    from quantlib.ptq.fisher import fisher_weights

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 1, 8, 8, generator=g)
    gm = ptq.quantize(build("digits_cnn"), [x], "rtn", w_bits=2, a_bits=4)
    last = reconstruction_units(gm)[-1]
    assert last.layers == ("classifier",) and last.sink.name == "classifier"
    weights = fisher_weights(gm, last, [x], batch_size=8, activations=False)
    layers = [m for m in gm.modules() if isinstance(m, (QConv2d, QLinear))]
    with torch.no_grad():
        with float_mode(gm):
            p = F.softmax(gm(x), dim=1)
        with float_mode(gm, keep=layers):  # weights quantised, activations float
            q = F.softmax(gm(x), dim=1)
    # d KL(p || softmax(z)) / dz = (softmax(z) - p) / B, B the mini-batch: 8 then 4 samples
    expected = torch.cat([(q[:8] - p[:8]).abs() / 8, (q[8:] - p[8:]).abs() / 4]) + 1.0
    assert weights.shape == (12, 10)
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-6)
    assert float((weights - 1).max()) > 1e-3  # the quantised logits differ: the gradient is not zero


def test_the_reconstruction_error_weights_each_squared_element_by_the_fisher_weight_squared():
    from quantlib.ptq.brecq import reconstruction_error

    output = torch.tensor([[[1.0, 2.0], [0.0, 1.0]], [[3.0, 0.0], [1.0, 1.0]]])  # [N=2, C=2, L=2]
    target = torch.zeros_like(output)
    weights = torch.tensor([[[1.0, 2.0], [1.0, 1.0]], [[0.5, 1.0], [1.0, 3.0]]])
    # per (sample, position): sum over channels of (error * weight)^2, then the mean over the 4 of them
    assert reconstruction_error(output, target, None).item() == (1 + 0 + 4 + 1 + 9 + 1 + 0 + 1) / 4
    assert reconstruction_error(output, target, weights).item() == (1 + 0 + 16 + 1 + 2.25 + 1 + 0 + 9) / 4


def test_brecq_with_the_fisher_loss_ends_on_the_weight_grid_and_refuses_unknown_losses():
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(16, 1, 8, 8, generator=g)]
    gm = ptq.quantize(build("digits_cnn"), x, "brecq", w_bits=3, a_bits=4, loss="fisher_diag", iters=10,
                      act_iters=5)
    for layer in (m for m in gm.modules() if isinstance(m, (QConv2d, QLinear))):
        levels = layer.weight.detach() / layer.scale.detach().reshape(-1, *[1] * (layer.weight.dim() - 1))
        assert torch.allclose(levels, levels.round(), atol=1e-4)
    with pytest.raises(ValueError, match="loss='fisher' is not one of \\('mse', 'fisher_diag'\\)"):
        ptq.get_method("qdrop", loss="fisher")
