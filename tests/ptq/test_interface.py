"""The PTQ interface: the registry, parameter and option checks, the 8-bit head and stem, the float model untouched."""

import pytest
import torch

from quantlib import ptq
from quantlib.quantised_layers import quantised_layers
from quantlib.zoo import build


def _batches(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, 1, 8, 8, generator=g) for _ in range(n)]


def test_the_registry_lists_and_builds_methods_with_their_parameters():
    assert ptq.available_methods() == ["rtn", "bias_correction", "adaround", "aciq", "aciq_mix", "lapq", "brecq",
                                      "qdrop"]
    method = ptq.get_method("adaround", iters=10, weight=0.1)
    assert method.name == "adaround" and method.params.iters == 10 and method.params.weight == 0.1
    assert method.params.beta_start == 20.0 and method.params.beta_end == 2.0 and method.params.warmup == 0.2
    assert ptq.get_method("rtn").params.ranges == "minmax"


def test_unknown_methods_and_parameters_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown PTQ method 'adaroun'; available: \['rtn', 'bias_correction', "
                                         r"'adaround', 'aciq', 'aciq_mix', 'lapq', 'brecq', 'qdrop'\]"):
        ptq.get_method("adaroun")
    with pytest.raises(ValueError, match=r"'adaround' has no parameter\(s\) \['iter'\]; its parameters are "
                                         r"iters: int = 1000, ranges: str = 'mse'"):
        ptq.get_method("adaround", iter=5)
    with pytest.raises(ValueError, match=r"parameter iters=2.5 must be a int \(default 1000\)"):
        ptq.get_method("adaround", iters=2.5)
    with pytest.raises(ValueError, match=r"'rtn': ranges='max' is not one of \('minmax', 'percentile', 'mse'\)"):
        ptq.get_method("rtn", ranges="max")
    with pytest.raises(ValueError, match=r"beta must anneal down"):
        ptq.get_method("adaround", beta_start=1.0)


@pytest.mark.parametrize(("option", "value"), [("w_bits", 1), ("a_bits", 9), ("w_bits", True)])
def test_bit_widths_outside_2_to_8_are_refused(option, value):
    with pytest.raises(ValueError, match=rf"PTQ option {option}={value!r} is not allowed: give an integer from 2 to 8"):
        ptq.PTQOptions(**{option: value})


def test_head_and_stem_stay_at_8_bits_unless_disabled():
    model = build("digits_cnn", seed=0)
    gm = ptq.quantize(model, _batches(), "rtn", w_bits=3, a_bits=3)
    layers = quantised_layers(gm)
    assert [layer.module.spec.qrange.bits for layer in layers] == [8, 3, 3, 8]
    assert [layer.input_quantiser.spec.qrange.bits for layer in layers] == [8, 3, 3, 8]  # input, ReLUs, last input
    gm = ptq.quantize(model, _batches(), "rtn", w_bits=3, a_bits=3, keep_head_stem_8bit=False)
    assert [layer.module.spec.qrange.bits for layer in quantised_layers(gm)] == [3, 3, 3, 3]


def test_the_float_model_is_untouched_and_weights_land_on_their_grids():
    model = build("digits_cnn", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = ptq.quantize(model, _batches(), "adaround", iters=20)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for layer in quantised_layers(gm):
        scale = layer.module.scale.detach().reshape(-1, *([1] * (layer.module.weight.dim() - 1)))
        levels = layer.module.weight.detach() / scale
        assert torch.allclose(levels, levels.round(), atol=1e-4)


def test_rtn_percentile_ranges_are_inside_min_max_ranges():
    model = build("digits_cnn", seed=0)
    minmax = quantised_layers(ptq.quantize(model, _batches(), "rtn"))
    percentile = quantised_layers(ptq.quantize(model, _batches(), "rtn", ranges="percentile", percentile=99.0))
    inputs = [(a.input_quantiser.clip_hi.item(), b.input_quantiser.clip_hi.item())
              for a, b in zip(minmax, percentile, strict=True)]
    assert all(p < m for m, p in inputs)


def test_calibration_data_must_not_be_empty():
    with pytest.raises(ValueError, match="PTQ needs calibration data"):
        ptq.quantize(build("digits_cnn"), [], "rtn")


def test_float_mode_is_the_float_model_pools_included():
    from quantlib.modules.average_pool import AveragePool2d
    from quantlib.ptq.capture import float_mode
    model = build("digits_cnn", seed=0).eval()
    x = torch.randn(16, 1, 8, 8)
    gm = ptq.quantize(model, [x], "rtn", w_bits=2, a_bits=2)
    pools = [m for m in gm.modules() if isinstance(m, AveragePool2d)]
    assert pools and all(p.scale.numel() == 1 for p in pools)  # the quantised model floors its pool
    with torch.no_grad(), float_mode(gm):
        torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-5)
    assert all(p.scale.numel() == 1 for p in pools)
    with torch.no_grad():
        assert (gm(x) - model(x)).abs().max() > 0.02  # outside float_mode: quantised
