"""ACIQ: the analytical clip is the minimiser of the paper's expected error, matches the paper's alpha / b table,
and is what a quantiser gets on synthetic Laplace data; ACIQ-Mix blends it with the MSE clip."""

import pytest
import torch

from quantlib import ptq
from quantlib.modules.qactivations import QIdentity
from quantlib.ptq.aciq import expected_error, fitted_spread, optimal_clip, set_analytical_clip
from quantlib.quantised_layers import quantised_layers
from quantlib.specs import QuantiserSpec
from quantlib.zoo import build


@pytest.mark.parametrize(("distribution", "table"), [("laplace", {2: 2.83, 3: 3.89, 4: 5.03}),
                                                     ("gauss", {2: 1.71, 3: 2.15, 4: 2.55})])
def test_the_clip_matches_the_papers_alpha_over_spread(distribution, table):
    for bits, ratio in table.items():
        assert optimal_clip(1.0, bits, distribution) == pytest.approx(ratio, abs=0.01)
        assert optimal_clip(0.25, bits, distribution) == pytest.approx(0.25 * ratio, abs=0.0025)


@pytest.mark.parametrize("signed", [True, False])
def test_the_clip_minimises_the_expected_error(signed):
    alpha = optimal_clip(0.7, 4, "laplace", signed)
    best = expected_error(alpha, 0.7, 4, "laplace", signed)
    assert best < expected_error(alpha * 0.98, 0.7, 4, "laplace", signed)
    assert best < expected_error(alpha * 1.02, 0.7, 4, "laplace", signed)


def test_a_quantiser_on_synthetic_laplace_data_gets_the_closed_form_clip():
    b = 0.5
    torch.manual_seed(0)
    x = torch.distributions.Laplace(torch.tensor(0.0), torch.tensor(b)).sample((200_000,))
    spread = float(fitted_spread(x, "laplace", signed=True))
    assert spread == pytest.approx(b, rel=0.01)
    q = QIdentity(QuantiserSpec.from_spec({"qrange": {"bitwidth": 3, "signed": True}, "qop": "round"}), "q")
    q.set_clip_bounds(x.min(), x.max())
    set_analytical_clip(q, x, "laplace", mix_ratio=1.0)
    # 2^3 steps of 2 alpha / 8 from -alpha: clip_hi is 3 steps of 4 above zero
    assert float(q.clip_hi.detach()) * 4 / 3 == pytest.approx(optimal_clip(spread, 3), rel=1e-5)
    assert optimal_clip(spread, 3) == pytest.approx(3.89 * b, rel=0.02)


def test_aciq_mix_blends_the_analytical_and_the_mse_scales():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(64, 1, 8, 8, generator=g)]
    model = build("digits_cnn", seed=0)
    options = ptq.PTQOptions(w_bits=3, a_bits=3)
    mse = quantised_layers(ptq.get_method("rtn", ranges="mse").quantize(model, batches, options))
    aciq = quantised_layers(ptq.get_method("aciq").quantize(model, batches, options))
    mix = quantised_layers(ptq.get_method("aciq_mix", mix_ratio=0.25).quantize(model, batches, options))
    for a, m, x in zip(aciq, mse, mix, strict=True):
        expected = 0.25 * a.module.scale + 0.75 * m.module.scale
        torch.testing.assert_close(x.module.scale, expected, rtol=1e-6, atol=0)
    assert not torch.allclose(aciq[1].module.scale, mse[1].module.scale)


def test_aciq_weight_clips_are_per_channel_closed_forms():
    g = torch.Generator().manual_seed(1)
    model = build("digits_cnn", seed=1)
    gm = ptq.quantize(model, [torch.randn(64, 1, 8, 8, generator=g)], "aciq", w_bits=4, a_bits=4)
    conv = quantised_layers(gm)[1].module
    spreads = fitted_spread(conv.weight, "laplace", True, (0,))  # the folded weights; bias correction keeps them
    expected = torch.tensor([2 * optimal_clip(float(s), 4) / 16 for s in spreads])
    torch.testing.assert_close(conv.scale.detach().reshape(-1), expected, rtol=1e-5, atol=0)


class WideAndNarrow(torch.nn.Module):
    """A linear layer whose output channels have Laplace weights of very different spreads."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 8)
        spreads = torch.tensor([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]).reshape(-1, 1)
        laplace = torch.distributions.Laplace(0.0, 1.0)
        torch.manual_seed(0)
        with torch.no_grad():
            self.fc.weight.copy_(laplace.sample((8, 64)) * spreads)

    def forward(self, x):
        return self.fc(x)


def test_bit_allocation_shares_the_layers_levels_as_alpha_to_the_two_thirds():
    model = WideAndNarrow()
    batches = [torch.randn(32, 64, generator=torch.Generator().manual_seed(1))]
    method = ptq.get_method("aciq", bit_allocation=True)
    gm = method.quantize(model, batches, ptq.PTQOptions(w_bits=4, a_bits=8, keep_head_stem_8bit=False))
    levels = torch.tensor(method.levels["fc"])
    w = model.fc.weight.detach()
    alphas = torch.tensor([optimal_clip(float(s), 4) for s in fitted_spread(w, "laplace", True, (0,))],
                          dtype=torch.float64)
    expected = torch.clamp(torch.round(8 * 16 * alphas ** (2 / 3) / (alphas ** (2 / 3)).sum()), 2, 256).long()
    assert levels.tolist() == expected.tolist()
    assert levels.tolist() == sorted(levels.tolist()) and levels[0] < 16 < levels[-1]  # wider channels get more
    assert abs(int(levels.sum()) - 8 * 16) <= 8  # the layer's budget, up to rounding
    layer = gm.get_submodule("fc")
    steps = layer.scale.detach().reshape(-1, 1)
    quantised = layer.quantise(layer.weight).detach() / steps
    for row, n in zip(quantised, levels.tolist(), strict=True):  # each channel within its own n levels
        assert row.min() >= -(n // 2) and row.max() <= n - n // 2 - 1
        assert len(row.round().unique()) <= n


def test_bit_allocation_lowers_the_weights_quantisation_error_at_the_same_budget():
    model = WideAndNarrow()
    batches = [torch.randn(32, 64, generator=torch.Generator().manual_seed(1))]
    options = ptq.PTQOptions(w_bits=4, a_bits=8, keep_head_stem_8bit=False)
    w = model.fc.weight.detach()
    errors = {}
    for allocate in (False, True):
        layer = ptq.get_method("aciq", bit_allocation=allocate).quantize(model, batches, options).get_submodule("fc")
        errors[allocate] = float(((layer.quantise(layer.weight).detach() - w) ** 2).sum())
    assert errors[True] < 0.8 * errors[False]


def test_bit_allocation_is_refused_with_power_of_two_scales():
    with pytest.raises(ValueError, match="bit_allocation needs per-channel weights and float scales"):
        ptq.quantize(WideAndNarrow(), [torch.randn(4, 64)], "aciq", pow2=True, bit_allocation=True)
