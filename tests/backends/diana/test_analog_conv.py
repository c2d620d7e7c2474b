import numpy as np
import pytest
import torch
from torch import nn

from quantlib.backends.diana.analog_conv import AnalogConv2d, tile_channels
from quantlib.calibration import calibrate


def _numpy_reference(x, w_ternary, eps_w, eps_adc, tile, stride, padding):
    """Per tile: conv, floor(partial / eps_adc) clipped to [-32, 31], times eps_adc; tiles summed."""
    out = 0.0
    for s in range(0, x.shape[1], tile):
        partial = nn.functional.conv2d(torch.from_numpy(x[:, s:s + tile]).double(),
                                       torch.from_numpy(w_ternary[:, s:s + tile] * eps_w).double(),
                                       stride=stride, padding=padding).numpy()
        out = out + eps_adc * np.clip(np.floor(partial / eps_adc), -32, 31)
    return out


def test_tile_sizes_follow_the_1152_row_array():
    assert tile_channels((3, 3)) == 128 and tile_channels((1, 1)) == 1152 and tile_channels((5, 5)) == 46
    conv = AnalogConv2d(300, 8, 3, padding=1)
    assert conv.tiles() == [(0, 128), (128, 256), (256, 300)]


def test_forward_equals_tiled_adc_reference_with_pow2_scales():
    torch.manual_seed(0)
    conv = AnalogConv2d.from_fp_module(nn.Conv2d(300, 8, 3, padding=1, bias=False), name="a")
    x = torch.floor(torch.rand(2, 300, 6, 6) * 128) / 64  # 7-bit unsigned inputs, scale 1/64
    calibrate(conv, [x])
    conv.set_scale(torch.tensor(2.0 ** -6))
    conv.adc.set_scale(torch.tensor(2.0 ** -3))
    w = conv.weight.detach().numpy()
    eps_w = 2.0 ** -6
    ternary = np.floor(np.clip(w / eps_w, -1, 1) + 0.5)
    expected = _numpy_reference(x.numpy(), ternary, eps_w, 2.0 ** -3, 128, 1, 1)
    got = conv(x).detach().double().numpy()
    np.testing.assert_array_equal(got, expected)
    assert len(conv.tiles()) == 3


def test_float_mode_is_a_plain_convolution_and_groups_are_refused():
    dense = nn.Conv2d(4, 4, 3, padding=1)
    conv = AnalogConv2d.from_fp_module(dense)
    x = torch.randn(1, 4, 5, 5)
    assert torch.equal(conv(x), dense(x))
    with pytest.raises(ValueError, match="Layer 'dw' cannot run on the analog core: groups=4"):
        AnalogConv2d.from_fp_module(nn.Conv2d(4, 4, 3, groups=4), name="dw")


def test_noise_only_in_training_mode_and_when_asked():
    torch.manual_seed(1)
    conv = AnalogConv2d.from_fp_module(nn.Conv2d(8, 4, 1, bias=False))
    x = torch.rand(4, 8, 3, 3)
    calibrate(conv, [x])
    conv.adc.set_scale(torch.tensor(2.0 ** -4))
    clean = conv.eval()(x)
    conv.noise_sigma = 0.05
    assert torch.equal(conv.eval()(x), clean)        # eval: never noisy
    noisy = conv.train()(x)
    assert not torch.equal(noisy, clean)
    steps = conv.adc.scale.detach()
    assert bool(((noisy / steps) == (noisy / steps).round()).all())  # still on the ADC grid after the noise
