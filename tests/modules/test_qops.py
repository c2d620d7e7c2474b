"""The paper quantisers as module qops: a spec key selects them, and they compute what their papers define."""

import pytest
import torch
from torch import nn

from quantlib.modules import QConv2d, QuantiserSpec
from quantlib.quantizers import dorefa_weights, pow2_ceil


def _conv(qop: str, bits: int = 4, signed: bool = True) -> QConv2d:
    torch.manual_seed(0)
    spec = QuantiserSpec.from_spec({"qrange": {"bitwidth": bits, "signed": signed}, "qop": qop})
    conv = QConv2d.from_fp_module(nn.Conv2d(4, 4, 3), spec, "conv")
    conv.start_observing()
    conv.quantise(conv.weight.detach())
    conv.stop_observing()
    conv.init_qhparams()
    return conv


def test_lsq_has_the_round_forward_and_learns_the_scale():
    lsq, rounded = _conv("lsq"), _conv("round")
    w = lsq.quantise(lsq.weight)
    assert torch.equal(w, rounded.quantise(rounded.weight))
    levels = (w / lsq.scale).detach()
    assert torch.equal(levels, levels.round()) and levels.min() >= -8 and levels.max() <= 7
    w.pow(2).sum().backward()
    assert lsq.clip_hi.grad is not None and float(lsq.clip_hi.grad.abs().sum()) > 0


def test_tqt_quantises_on_the_power_of_two_at_or_above_the_scale():
    tqt = _conv("tqt")
    step = pow2_ceil(tqt.scale.detach())
    w = tqt.quantise(tqt.weight)
    assert torch.equal(w.detach(), step * torch.clamp(torch.round(tqt.weight.detach() / step), -8, 7))
    w.sum().backward()
    assert tqt.clip_hi.grad is not None


def test_dorefa_weights_as_a_qop():
    conv = _conv("dorefa")
    assert torch.equal(conv.quantise(conv.weight), dorefa_weights(conv.weight, 4))


def test_paper_qops_refuse_ranges_they_cannot_take():
    spec = QuantiserSpec.from_spec({"qrange": {"n_levels": 10, "offset": -5}, "qop": "tqt"})
    conv = QConv2d.from_fp_module(nn.Conv2d(1, 1, 1), spec, "odd")
    conv.is_quantised = True
    with pytest.raises(ValueError, match=r"Quantiser 'odd': qop 'tqt' needs a full 3-bit range, got \[-5, 4\]"):
        conv.quantise(conv.weight)
