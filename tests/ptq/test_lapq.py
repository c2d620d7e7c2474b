"""LAPQ: the p-norm initialisation picks the p of least loss on a quadratic fit, and the joint Powell search lowers
the calibration loss below its initialisation."""

import pytest
import torch

from quantlib import ptq
from quantlib.modules.qactivations import QIdentity
from quantlib.ptq.lapq import HISTOGRAM_BINS, PNormSearch
from quantlib.specs import QuantiserSpec
from quantlib.zoo import build


def test_a_higher_p_norm_keeps_more_of_the_range():
    torch.manual_seed(0)
    x = torch.distributions.Laplace(torch.tensor(0.0), torch.tensor(1.0)).sample((20_000,))
    q = QIdentity(QuantiserSpec.from_spec({"qrange": {"bitwidth": 3, "signed": True}, "qop": "round"}), "q")
    q.set_clip_bounds(x.min(), x.max())
    search = PNormSearch(q, x)
    assert search.values.shape == (1, HISTOGRAM_BINS)  # 20000 values summarised by a histogram
    scales = [float(search.scale(p)) for p in (1.0, 2.0, 4.0, 8.0)]
    assert scales == sorted(scales) and scales[0] < 0.5 * scales[-1]
    top = float(x.abs().max()) / 3
    assert all(0 < s <= top for s in scales)
    assert PNormSearch(q, x[:2000]).values.shape == (1, 2000)  # few values: measured one by one


def test_the_histogram_search_finds_the_scale_of_the_value_by_value_search(monkeypatch):
    import quantlib.ptq.lapq as lapq
    torch.manual_seed(1)
    x = torch.randn(HISTOGRAM_BINS * 8)
    q = QIdentity(QuantiserSpec.from_spec({"qrange": {"bitwidth": 4, "signed": True}, "qop": "round"}), "q")
    q.set_clip_bounds(x.min(), x.max())
    summarised = float(PNormSearch(q, x).scale(2.0))
    monkeypatch.setattr(lapq, "HISTOGRAM_BINS", x.numel())
    one_by_one = PNormSearch(q, x)
    assert one_by_one.values.shape == (1, x.numel())
    assert summarised == pytest.approx(float(one_by_one.scale(2.0)), rel=0.02)


@pytest.mark.parametrize("labelled", [False, True])
def test_the_powell_search_lowers_the_calibration_loss(labelled):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 1, 8, 8, generator=g)
    batches = [(images, torch.randint(0, 10, (64,), generator=g))] if labelled else [images]
    method = ptq.get_method("lapq", max_evaluations=60)
    method.quantize(build("digits_cnn", seed=0), batches, ptq.PTQOptions(w_bits=3, a_bits=3))
    trace = method.trace
    assert set(trace.p_losses) == {2.0, 2.5, 3.0, 3.5, 4.0}
    assert 2.0 <= trace.p <= 4.0
    assert trace.final_loss < trace.initial_loss
    assert trace.initial_loss <= max(trace.p_losses.values()) + 1e-9


def test_p_values_need_three_points_for_the_quadratic():
    with pytest.raises(ValueError, match=r"p_values=\(2.0, 3.0\) must hold at least 3 positive numbers"):
        ptq.get_method("lapq", p_values=(2.0, 3.0))
