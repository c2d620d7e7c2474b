"""AdaRound's mechanics: h(V) starts at the weights' fractional parts, beta anneals 20 -> 2 after a 20 % warm-up,
the hand-written gradient equals autograd's, and the roundings end at 0 or 1."""

import pytest
import torch

from quantlib import ptq
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.ptq.adaround import (
    AdaRoundParams,
    ReconstructionData,
    beta_at,
    initial_v,
    rectified_sigmoid,
    soft_rounding_loss,
)
from quantlib.specs import QuantiserSpec
from quantlib.zoo import build


def test_initial_v_makes_h_the_fractional_part():
    rest = torch.tensor([0.0, 0.1, 0.5, 0.9, 0.999])
    torch.testing.assert_close(rectified_sigmoid(initial_v(rest)), rest, atol=1e-6, rtol=0)


def test_beta_is_off_in_the_warm_up_then_anneals_linearly_from_20_to_2():
    params = AdaRoundParams(iters=1000)
    betas = [beta_at(step, params) for step in range(1000)]
    assert betas[:200] == [None] * 200
    assert betas[200] == 20.0 and betas[600] == pytest.approx(11.0) and betas[999] == pytest.approx(2.0225)
    assert all(a > b for a, b in zip(betas[200:-1], betas[201:], strict=True))


def _layer(kind, groups=1):
    spec = QuantiserSpec.from_spec({"qrange": {"bitwidth": 3, "signed": True}, "qop": "round",
                                    "granularity": "per-outchannel_weights"})
    torch.manual_seed(0)
    if kind == "linear":
        return QLinear(6, 4, spec=spec), torch.randn(16, 6), torch.randn(16, 4)
    return (QConv2d(4, 6, 3, padding=(1, 1), groups=groups, spec=spec), torch.randn(4, 4, 5, 5),
            torch.randn(4, 6, 5, 5))


@pytest.mark.parametrize(("kind", "groups"), [("linear", 1), ("conv", 1), ("conv", 2)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("beta", [None, 7.0])
def test_the_hand_written_gradient_equals_autograd(kind, groups, relu, beta):
    module, x, target = _layer(kind, groups)
    data = ReconstructionData(module, x, target, batch_size=4)
    assert (data.rows is not None) == (groups == 1)
    xb, tb = data.batch(torch.Generator().manual_seed(1))
    scale = torch.full((module.weight.shape[0],) + (1,) * (module.weight.dim() - 1), 0.2)
    down = torch.floor(module.weight.detach() / scale)
    v = torch.randn_like(down).mul_(3).requires_grad_()  # some h clamped at 0 and 1, some levels clipped at -4 / 3
    ours = soft_rounding_loss(v.detach(), down, scale, -4, 3, data, xb, tb, relu, beta, 0.01)

    h = torch.clamp(torch.sigmoid(v) * 1.2 - 0.1, 0, 1)
    out = data.output(xb, scale * torch.clamp(down + h, -4, 3))
    y = torch.relu(out) if relu else out
    reconstruction = (y - tb).pow(2).sum(1).mean()
    regulariser = (1 - (2 * h - 1).abs().pow(beta)).sum() if beta is not None else torch.zeros(())
    (grad,) = torch.autograd.grad(reconstruction + 0.01 * regulariser, [v])
    torch.testing.assert_close(ours.reconstruction, reconstruction.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.regulariser, regulariser.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.grad_v, grad, rtol=1e-4, atol=1e-6)
    assert grad.abs().sum() > 0


def test_roundings_end_at_0_or_1_and_the_regulariser_falls():
    g = torch.Generator().manual_seed(0)
    method = ptq.get_method("adaround", iters=400, lr=0.03)
    method.quantize(build("digits_cnn", seed=0), [torch.randn(64, 1, 8, 8, generator=g) for _ in range(2)])
    assert set(method.traces) == {"features.0", "features.3", "features.7", "classifier"}
    for trace in method.traces.values():
        assert len(trace.reconstruction) == 400 and len(trace.regulariser) == 320
        assert trace.undecided < 0.05
        assert trace.regulariser[-1] < 0.2 * trace.regulariser[0]


def test_rounding_is_learned_up_or_down_from_the_floor():
    g = torch.Generator().manual_seed(0)
    model = build("digits_cnn", seed=0)
    batches = [torch.randn(64, 1, 8, 8, generator=g)]
    rtn = ptq.quantize(model, batches, "rtn", ranges="mse")
    ada = ptq.quantize(model, batches, "adaround", iters=200)
    a, b = rtn.get_submodule("features.3"), ada.get_submodule("features.3")
    assert torch.equal(a.scale, b.scale)  # the same grid: only the rounding differs
    scale = a.scale.detach().reshape(-1, 1, 1, 1)
    lo, hi = a.spec.qrange.min, a.spec.qrange.max
    floor = torch.floor(a.weight.detach() / scale)
    learned = torch.round(b.weight.detach() / scale)
    assert bool(((learned == floor.clamp(lo, hi)) | (learned == (floor + 1).clamp(lo, hi))).all())
    nearest = torch.round(a.quantise(a.weight).detach() / scale)
    changed = float((learned != nearest).float().mean())
    assert 0.01 < changed < 0.5, changed


def test_layers_with_inputs_too_large_to_unfold_reconstruct_as_convs_with_the_same_loss(monkeypatch):
    import quantlib.ptq.adaround as adaround
    module, x, target = _layer("conv")
    rows = ReconstructionData(module, x, target, 4)
    monkeypatch.setattr(adaround, "COLUMNS_LIMIT_BYTES", 0)
    convs = ReconstructionData(module, x, target, 4)
    assert rows.rows is not None and convs.rows is None
    scale = torch.full((6, 1, 1, 1), 0.2)
    down = torch.floor(module.weight.detach() / scale)
    v = torch.randn_like(down)
    losses = [soft_rounding_loss(v, down, scale, -4, 3, data, *data.batch(torch.Generator().manual_seed(2)), True,
                                 5.0, 0.01) for data in (rows, convs)]
    torch.testing.assert_close(losses[0].reconstruction, losses[1].reconstruction, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses[0].grad_v, losses[1].grad_v, rtol=1e-4, atol=1e-6)
