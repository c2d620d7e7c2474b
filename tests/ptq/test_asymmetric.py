"""Asymmetric ranges (``symmetric=False``): weights and signed activations on grids with a learned zero point, ReLU
outputs from zero; the methods whose clip search is defined for symmetric ranges refuse them; the integer path takes
them."""

from __future__ import annotations

import pytest
import torch

from quantlib import ptq
from quantlib.backends.onnx import export_integer_onnx, verify_onnxruntime
from quantlib.errors import UnsupportedOpError
from quantlib.quantised_layers import input_quantisers, quantised_layers
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact
from quantlib.zoo import build


def batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(32, 1, 8, 8, generator=g) + 0.5 for _ in range(2)]  # inputs in [0.5, 1.5): not around 0


def levels(module) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights' integer levels and the per-channel zero points, shaped to broadcast."""
    scale = module.scale.detach().reshape(-1, *[1] * (module.weight.dim() - 1))
    zero = module.zero.reshape(scale.shape)
    return module.weight.detach() / scale, zero


def test_rtn_grids_have_learned_zero_points():
    gm = ptq.quantize(build("digits_cnn"), batches(), "rtn", w_bits=4, a_bits=4, symmetric=False)
    (network_input,) = input_quantisers(gm)
    assert network_input.spec.qrange.offset is None
    assert network_input.zero.item() == 0  # inputs in [0.5, 1.5): the grid is widened to hold 0, so [0, 1.5]
    assert network_input.scale.item() == pytest.approx(1.5 / 255, rel=1e-3)
    for layer in quantised_layers(gm):
        assert layer.module.spec.qrange.offset is None
    middle = quantised_layers(gm)[1]
    assert middle.input_quantiser.spec.qrange.offset == 0  # a ReLU output starts at zero
    w, zero = levels(middle.module)
    n = middle.module.n_levels
    assert n == 16 and bool((zero != -8).any())
    scale = middle.module.scale.detach().reshape(zero.shape)
    expected = scale * torch.clamp(torch.floor(w + 0.5), zero, zero + n - 1)  # round half up on the channel's grid
    assert torch.allclose(middle.module.quantise(middle.module.weight).detach(), expected, rtol=0, atol=1e-6)
    lowest = middle.module.weight.detach().amin(dim=(1, 2, 3))  # minmax: each grid starts at its channel's minimum
    assert torch.allclose(zero.flatten() * scale.flatten(), lowest, rtol=0, atol=float(scale.max()))


def test_adaround_rounds_within_each_channels_asymmetric_grid():
    gm = ptq.quantize(build("digits_cnn"), batches(), "adaround", w_bits=3, a_bits=4, symmetric=False, iters=100)
    for layer in quantised_layers(gm):
        w, zero = levels(layer.module)
        assert torch.allclose(w, w.round(), atol=1e-4)
        assert bool((w.round() >= zero).all()) and bool((w.round() <= zero + layer.module.n_levels - 1).all())


@pytest.mark.parametrize("method", ["lapq", "aciq", "aciq_mix"])
def test_symmetric_only_methods_refuse_asymmetric_ranges(method):
    with pytest.raises(ValueError, match=f"PTQ method '{method}' \\(the network-wide method\\) fits clipping ranges "
                                         f"symmetric about zero or starting at zero"):
        ptq.quantize(build("digits_cnn"), batches(), method, symmetric=False)


def test_a_symmetric_only_override_is_refused_too():
    with pytest.raises(ValueError, match="PTQ method 'lapq' \\(override 'features.3'\\) fits clipping ranges"):
        ptq.quantize(build("digits_cnn"), batches(), "rtn", symmetric=False,
                     overrides={"features.3": {"method": "lapq"}})


@pytest.mark.parametrize("pow2", [True, False])
def test_learned_zero_points_deploy_exactly_with_onnx_zero_points_and_channel_offsets(pow2, tmp_path):
    x = [2.0 * b - 1.5 for b in batches()]  # inputs in [-0.5, 1.5): a zero point near a quarter of the range
    gm = ptq.quantize(build("digits_cnn"), x, "rtn", w_bits=4, a_bits=4, pow2=pow2, symmetric=False)
    flow = ptq.deploy(gm, x[0][:1])
    assert -80 < int(input_quantisers(gm)[0].zero) < -50
    exported = export_integer_onnx(flow.integer, x[1], tmp_path / "net.onnx")
    # the 8-bit input's 256 levels start at its zero point: stored as uint8 plus that zero point
    assert exported.zero_points == {"x_quantiser": -int(input_quantisers(gm)[0].zero)}
    # the 8-bit head's weights span 256 levels from each channel's zero point: sums of inputs correct them
    assert "features_0.acc.input_sums" in {n.name for n in exported.model.graph.node}
    for comparisons in (compare_exact_and_integer(flow.exact, flow.integer, x[1]),
                        verify_onnxruntime(flow.integer, exported, x[1])):
        assert [c for c in comparisons if c.mismatches] == [] and sum(c.elements for c in comparisons) > 10_000
    fake_vs_exact = compare_fake_and_exact(flow.fake, flow.exact, x[1])
    mismatches = sum(c.mismatches for c in fake_vs_exact)
    assert mismatches == 0 if pow2 else mismatches <= 1e-3 * sum(c.elements for c in fake_vs_exact)


def test_per_channel_zero_points_on_activations_are_refused_by_the_integer_path():
    from quantlib.editors.fake2true.requantiser import make_requant
    from quantlib.modules.qactivations import QIdentity
    from quantlib.specs import QuantiserSpec

    quantiser = QIdentity(QuantiserSpec.from_spec({"qrange": {"bitwidth": 4}, "granularity": (0,)}), "act")
    quantiser.set_clip_bounds(torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(UnsupportedOpError, match=r"Quantiser 'act' has one learned zero point per channel "
                                                 r"\(\[-10.0, -7.0\]...\); an integer requantisation clips"):
        make_requant(quantiser, torch.tensor(0.01))


@pytest.mark.parametrize("method", ["brecq", "qdrop"])
def test_block_reconstruction_on_a_residual_net_learns_steps_only_on_fixed_offset_grids(method):
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(8, 3, 32, 32, generator=g)]
    gm = ptq.quantize(build("resnet8"), x, method, w_bits=4, a_bits=4, symmetric=False, iters=5, act_iters=5)
    add_inputs = [m for name, m in gm.named_modules() if name.endswith("add.input_quantisers.0")]
    assert add_inputs and all(q.spec.qrange.offset is None for q in add_inputs)
    assert torch.isfinite(gm(x[0])).all()


def test_tied_scales_an_ulp_apart_deploy_as_one_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 32, 32, generator=g)
    gm = ptq.quantize(build("resnet8"), [x], "rtn", w_bits=4, a_bits=4, symmetric=False)
    add = gm.get_submodule("layer1.0.add")
    second = add.input_quantisers[1]
    # a learned-offset grid holds its scale as (clip_hi - clip_lo) / (n - 1): float32 leaves tied scales ulps apart
    second.set_scale(second.scale.detach() * (1 + 2 ** -22))
    assert add.input_quantisers[0].scale.item() != second.scale.item()
    flow = ptq.deploy(gm, x[:1])
    assert [c.layer for c in compare_exact_and_integer(flow.exact, flow.integer, x) if c.mismatches] == []
    second.set_scale(second.scale.detach() * 1.01)  # a scale that was never tied is still refused
    with pytest.raises(Exception, match="Add 'layer1_0_add' is not harmonised"):
        ptq.deploy(gm, x[:1])
