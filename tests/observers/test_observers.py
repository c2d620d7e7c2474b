import numpy as np
import pytest
import torch

from quantlib.errors import CalibrationError
from quantlib.observers import RunningHistogram, RunningStatistics, TensorObserver, mse_optimal_clip
from quantlib.specs import QHParamsInitStrategy, QRange

SIGNED8 = QRange.from_spec({"bitwidth": 8, "signed": True})


def test_running_statistics_match_numpy_over_many_batches_per_channel():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, 5, 5, generator=g) * torch.tensor([1.0, 10.0, 0.1]).view(1, 3, 1, 1) + 1e4
               for _ in range(20)]
    stats = RunningStatistics((1,))
    for b in batches:
        stats.update(b)
    data = torch.cat(batches).permute(1, 0, 2, 3).reshape(3, -1).double().numpy()
    np.testing.assert_allclose(stats.mean.numpy(), data.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), data.var(axis=1), rtol=1e-9)
    np.testing.assert_array_equal(stats.min.numpy(), data.min(axis=1))
    np.testing.assert_array_equal(stats.max.numpy(), data.max(axis=1))
    assert stats.count == 20 * 4 * 25


def test_statistics_without_moments_keep_min_and_max_and_refuse_the_variance():
    stats = RunningStatistics((1,), moments=False)
    for b in (torch.tensor([[1.0, -2.0], [3.0, 4.0]]), torch.tensor([[0.5, 7.0]])):
        stats.update(b)
    assert stats.min.tolist() == [0.5, -2.0] and stats.max.tolist() == [3.0, 7.0] and stats.count == 3
    with pytest.raises(ValueError, match="collected without moments"):
        _ = stats.std


def test_per_outchannel_weight_statistics():
    w = torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2)
    stats = RunningStatistics((0,))
    stats.update(w)
    assert stats.min.tolist() == [0.0, 12.0] and stats.max.tolist() == [11.0, 23.0]


def test_histogram_quantiles_survive_range_growth():
    g = torch.Generator().manual_seed(1)
    h = RunningHistogram((), bins=4096)
    data = [torch.rand(10000, generator=g) * s for s in (1.0, 2.0, 4.0)]  # each batch widens the range
    for d in data:
        h.update(d)
    allv = torch.cat(data).double()
    assert h.counts.sum().item() == 30000
    for q in (0.5, 0.9, 0.99):
        assert h.quantile(q, upper=True).item() == pytest.approx(torch.quantile(allv, q).item(), abs=0.01)
    assert h.quantile(0.5, upper=False).item() <= h.quantile(0.5, upper=True).item()


def test_mse_clip_shrinks_a_long_tail_and_keeps_a_uniform_range():
    g = torch.Generator().manual_seed(2)
    tailed = RunningHistogram(())
    tailed.update(torch.cat([torch.randn(100000, generator=g), torch.tensor([40.0, -40.0])]))
    lo, hi = mse_optimal_clip(tailed, n_levels=16, symmetric=True)
    assert 1.5 < hi.item() < 4.0 and lo.item() == -hi.item()  # N(0,1) core, clipped far below the tail at 40
    uniform = RunningHistogram(())
    uniform.update(torch.rand(100000, generator=g))
    lo, hi = mse_optimal_clip(uniform, n_levels=256, symmetric=False)
    assert hi.item() > 0.97


def test_mse_clip_measures_the_quantisers_own_rounding():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200000, generator=g)
    histogram = RunningHistogram(())
    histogram.update(x)

    def error(hi: float, nearest: bool) -> float:  # the 4-bit signed grid -8 .. 7 of step hi / 7
        eps = hi / 7
        scaled = x / eps
        return float(((torch.clamp(torch.floor(scaled + 0.5 if nearest else scaled), -8, 7) * eps - x) ** 2).mean())

    floor_clip = mse_optimal_clip(histogram, n_levels=16, symmetric=True)[1].item()
    nearest_clip = mse_optimal_clip(histogram, n_levels=16, symmetric=True, nearest=True)[1].item()
    assert nearest_clip != floor_clip
    assert error(nearest_clip, True) < error(floor_clip, True)  # each clip is best for its own rounding
    assert error(floor_clip, False) < error(nearest_clip, False)


def test_a_rounding_quantisers_mse_range_is_the_nearest_rounding_optimum():
    from quantlib.calibration import calibrate
    from quantlib.modules.qactivations import QIdentity
    from quantlib.specs import QuantiserSpec

    x = torch.randn(4096, generator=torch.Generator().manual_seed(4))
    spec = {"qrange": {"bitwidth": 4, "signed": True}, "init": "mse"}
    round_q, floor_q = QIdentity(QuantiserSpec.from_spec({**spec, "qop": "round"})), \
        QIdentity(QuantiserSpec.from_spec({**spec, "qop": "floor"}))
    for q in (round_q, floor_q):
        calibrate(q, [x])
    histogram = RunningHistogram(())
    histogram.update(x)
    for q, nearest in ((round_q, True), (floor_q, False)):
        _, hi = mse_optimal_clip(histogram, n_levels=16, symmetric=True, nearest=nearest)
        assert q.scale.item() == pytest.approx(hi.item() / 7, rel=1e-6)  # the grid [-8, 7] s reaches hi


def test_observer_rejects_nan_and_inf_naming_the_module():
    obs = TensorObserver((), QHParamsInitStrategy("minmax"), owner="layer1.0.conv1")
    with pytest.raises(CalibrationError, match="Module 'layer1.0.conv1' observed NaN values"):
        obs.update(torch.tensor([1.0, float("nan")]))
    with pytest.raises(CalibrationError, match="Module 'layer1.0.conv1' observed Inf values"):
        obs.update(torch.tensor([1.0, float("inf")]))


def test_observer_without_data_says_so_at_initialisation():
    obs = TensorObserver((), QHParamsInitStrategy("meanstd", {"n_std": 3.0}), owner="fc")
    with pytest.raises(CalibrationError, match="Module 'fc' observed no data.*'meanstd'"):
        obs.clip_bounds(SIGNED8)


@pytest.mark.parametrize("name, params, expected", [
    ("minmax", {}, (-3.0, 5.0)),
    ("const", {"a": -1.0, "b": 2.0}, (-1.0, 2.0)),
    ("meanstd", {"n_std": 1.0}, (1.0 - np.std([-3, 0, 2, 5, 1, 1]), 1.0 + np.std([-3, 0, 2, 5, 1, 1]))),
])
def test_clip_bounds_per_strategy(name, params, expected):
    obs = TensorObserver((), QHParamsInitStrategy(name, params), owner="q")
    obs.update(torch.tensor([-3.0, 0.0, 2.0]))
    obs.update(torch.tensor([5.0, 1.0, 1.0]))
    a, b = obs.clip_bounds(SIGNED8)
    assert (a.item(), b.item()) == pytest.approx(expected, rel=1e-6)


def test_percentile_bounds_clip_outliers_and_shape_broadcasts():
    obs = TensorObserver((1,), QHParamsInitStrategy("percentile", {"q": 99.0}), owner="act")
    x = torch.rand(1000, 2, 1, 1)
    x[0, 0] = 100.0
    obs.update(x)
    a, b = obs.clip_bounds(SIGNED8)
    assert a.shape == (1, 2, 1, 1)
    assert b[0, 0].item() < 2.0 and b[0, 1].item() < 1.01


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_an_mse_calibrated_quantiser_has_the_least_error_of_the_shrinkings_of_its_own_grid(bits):
    from quantlib.calibration import calibrate
    from quantlib.modules.qactivations import QIdentity
    from quantlib.specs import QuantiserSpec

    x = torch.randn(20000, generator=torch.Generator().manual_seed(5))
    q = QIdentity(QuantiserSpec.from_spec({"qrange": {"bitwidth": bits, "signed": True}, "init": "mse",
                                           "qop": "round"}))
    calibrate(q, [x])
    with torch.no_grad():
        chosen = float(((q(x) - x) ** 2).mean())
        top = float(x.abs().max())
        errors = []
        for k in range(1, 101):
            q.set_clip_bounds(torch.tensor(-top * k / 100), torch.tensor(top * k / 100))
            errors.append(float(((q(x) - x) ** 2).mean()))
    assert chosen <= min(errors) * 1.001  # measured 1.0 at 2, 3, 4 bits (a grid of step 2 hi / (n - 1): 1.47 at 2)
