import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib.errors import CalibrationError
from quantlib.modules import QConv2d, QIdentity, QLinear, QModule, QReLU, QuantiserSpec

SIGNED8 = QuantiserSpec.from_spec({"qrange": {"bitwidth": 8, "signed": True}})
UNSIGNED7_PACT = QuantiserSpec.from_spec({"qrange": {"bitwidth": 7, "signed": False}, "qop": "pact"})
PER_CHANNEL8 = QuantiserSpec.from_spec({"qrange": {"bitwidth": 8, "signed": True},
                                        "granularity": "per-outchannel_weights"})


def _calibrated(q: QModule, *batches: torch.Tensor) -> QModule:
    q.start_observing()
    for b in batches:
        q(b)
    q.stop_observing()
    q.init_qhparams()
    return q


def test_identity_quantiser_is_diana_floor_quantiser_after_minmax_calibration():
    q = _calibrated(QIdentity(SIGNED8, "act"), torch.tensor([-2.0, 1.0, 0.5]))
    eps = 2.0 / 128  # covers -2 with level -128
    assert q.scale.item() == pytest.approx(eps)
    assert (q.lower.item(), q.clip_hi.item()) == pytest.approx((-128 * eps, 127 * eps))
    x = torch.tensor([-3.0, -2.0, 0.01, 0.02, 1.0, 5.0])
    expected = eps * torch.clamp(torch.floor(x / eps), -128, 127)
    assert torch.equal(q(x), expected)


def test_float_mode_is_identity_and_observing_does_not_change_values():
    q = QIdentity(SIGNED8)
    x = torch.randn(10)
    assert torch.equal(q(x), x)
    q.start_observing()
    assert torch.equal(q(x), x)


def test_relu_quantiser_learns_its_clip_with_pact_gradient():
    q = _calibrated(QReLU(UNSIGNED7_PACT, "relu"), torch.tensor([0.0, 1.27]))
    assert q.scale.item() == pytest.approx(0.01) and q.zero.item() == 0
    x = torch.tensor([-1.0, 0.5, 2.0, 3.0], requires_grad=True)
    y = q(x)
    assert y.tolist() == pytest.approx([0.0, 0.5, 1.27, 1.27], abs=1e-6)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert q.clip_hi.grad.item() == 2.0  # two inputs above the clip


def test_relu6_keeps_its_ceiling_in_float_mode():
    q = QReLU.from_fp_module(nn.ReLU6(), UNSIGNED7_PACT)
    assert q(torch.tensor([-1.0, 3.0, 9.0])).tolist() == [0.0, 3.0, 6.0]


def test_qconv2d_copies_weights_and_quantises_them_per_channel():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    q = QConv2d.from_fp_module(conv, PER_CHANNEL8, "conv")
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(q(x), conv(x))  # float mode
    _calibrated(q, x)
    w = conv.weight.detach()
    expected_eps = torch.maximum(w.amax(dim=(1, 2, 3), keepdim=True) / 127, w.amin(dim=(1, 2, 3), keepdim=True) / -128)
    assert q.scale.shape == (3, 1, 1, 1)
    torch.testing.assert_close(q.scale.detach(), expected_eps)
    eps = q.scale.detach()
    w_q = eps * torch.clamp(torch.floor(w / eps), -128, 127)
    torch.testing.assert_close(q(x), F.conv2d(x, w_q, conv.bias, padding=1), rtol=0, atol=1e-6)
    out_scale = q.get_output_scale([torch.tensor(0.5)])
    assert out_scale.shape == (1, 3, 1, 1)
    torch.testing.assert_close(out_scale.flatten(), 0.5 * eps.flatten().double())  # float64, as integerisation needs


def test_qlinear_output_scale_per_tensor():
    q = _calibrated(QLinear.from_fp_module(nn.Linear(4, 2), SIGNED8), torch.randn(3, 4))
    assert q.get_output_scale([torch.tensor(0.25)]).item() == pytest.approx(0.25 * q.scale.item())


def test_new_qop_plugs_in_without_touching_the_base():
    QModule.register_qop("half_up", lambda m, x: m.scale * torch.floor(x / m.scale + 0.5))
    q = _calibrated(QIdentity(QuantiserSpec.from_spec({"qrange": {"bitwidth": 8, "signed": True},
                                                       "qop": "half_up"})), torch.tensor([1.27, -1.28]))
    assert q(torch.tensor([0.015, 0.014])).tolist() == pytest.approx([0.02, 0.01])


def test_unknown_qop_and_missing_calibration_are_explained():
    with pytest.raises(ValueError, match="Quantiser op 'lsqq' of module 'conv9' is not registered"):
        QIdentity(QuantiserSpec.from_spec({"qrange": "ternary", "qop": "lsqq"}), "conv9")
    with pytest.raises(CalibrationError, match="Module 'fc' was never observing"):
        QIdentity(SIGNED8, "fc").init_qhparams()
    q = QIdentity(SIGNED8, "fc")
    q.start_observing()
    with pytest.raises(CalibrationError, match="Module 'fc' observed no data"):
        q.init_qhparams()


def test_state_dict_round_trip_restores_per_channel_bounds_and_mode():
    q = _calibrated(QConv2d.from_fp_module(nn.Conv2d(2, 3, 1), PER_CHANNEL8), torch.randn(1, 2, 3, 3))
    fresh = QConv2d(2, 3, 1, spec=PER_CHANNEL8)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(1, 2, 3, 3)
    assert fresh.is_quantised and torch.equal(fresh(x), q(x))


def test_ternary_and_learned_offset_ranges():
    t = _calibrated(QIdentity(QuantiserSpec.from_spec({"qrange": "ternary", "qop": "ternary"})),
                    torch.tensor([-0.5, 0.5]))
    assert t(torch.tensor([-0.4, -0.2, 0.1, 0.3])).tolist() == [-0.5, 0.0, 0.0, 0.5]
    a = _calibrated(QIdentity(QuantiserSpec.from_spec({"qrange": {"bitwidth": 2}})), torch.tensor([-1.0, 2.0]))
    assert (a.zero.item(), a.scale.item()) == (-1.0, 1.0)
    assert a(torch.tensor([-3.0, 0.4, 2.5, 9.0])).tolist() == [-1.0, 0.0, 2.0, 2.0]
    widened = _calibrated(QIdentity(QuantiserSpec.from_spec({"qrange": {"bitwidth": 2}})), torch.tensor([1.0, 4.5]))
    assert (widened.zero.item(), widened.scale.item()) == (0.0, 1.5)  # [1, 4.5] widened to hold 0: [0, 4.5]


def test_weights_refuse_granularities_other_than_tensor_or_output_channel():
    spec = QuantiserSpec.from_spec({"qrange": {"bitwidth": 8, "signed": True}, "granularity": (1,)})
    with pytest.raises(ValueError, match=r"Layer 'c': weights take one scale per tensor .* not per dimensions \(1,\)"):
        QConv2d.from_fp_module(nn.Conv2d(2, 2, 1), spec, "c")
