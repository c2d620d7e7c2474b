"""``DianaModule.refine_weights``: a PTQ method in place of retraining at the pow2 stage. The weights end on their
final grids (ternary for analog layers, 8-bit for digital), the scales stay DIANA's, a mixed analog / digital model
recovers most of its accuracy without retraining, and the rest of the flow stays exact."""

from __future__ import annotations

import copy

import pytest
import torch

from quantlib.backends.diana import DianaModule, StageError
from quantlib.backends.diana.analog_conv import AnalogConv2d
from quantlib.data import digits_loaders
from quantlib.quantised_layers import quantised_layers
from quantlib.training import accuracy, train_epochs
from quantlib.zoo import digits_cnn


@pytest.fixture(scope="module")
def mixed():
    """A trained digits CNN as a DianaModule with two analog layers at the pow2 stage, its data."""
    torch.manual_seed(0)
    train, test = digits_loaders(seed=0)
    model = train_epochs(digits_cnn(), train, epochs=10, lr=3e-3).eval()
    calibration = [x for x, _ in list(train)[:8]]
    dm = DianaModule.from_fp_model(model, calibration[0][:1], analog="auto")
    dm.calibrate(calibration).map_scales(calibration).clip_scales_pow2()
    return dm, calibration, list(test)


def scales(dm: DianaModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in dm.named_parameters() if name.endswith(("clip_lo", "clip_hi"))}


def test_adaround_recovers_the_mixed_model_without_retraining(mixed):
    dm, calibration, test = mixed
    assert dm.choice.analog == ["features.3", "features.7"]
    plain = accuracy(dm, test)
    refined = copy.deepcopy(dm).refine_weights(calibration, "adaround", iters=300)
    assert accuracy(refined, test) > plain + 30  # measured: 21.73 % plain, 95.26 % refined (float 99.16)
    assert all(torch.equal(a, b) for a, b in zip(scales(dm).values(), scales(refined).values(), strict=True))
    for layer in quantised_layers(refined.gm):
        module = layer.module
        scale = module.scale.detach().reshape(-1, *[1] * (module.weight.dim() - 1))
        levels = module.weight.detach() / scale
        assert torch.equal(levels, levels.round())
        if isinstance(module, AnalogConv2d):
            assert set(levels.unique().tolist()) <= {-1.0, 0.0, 1.0}
        else:
            assert levels.min() >= -128 and levels.max() <= 127


def test_the_refined_model_stays_exact_through_integerisation(mixed):
    dm, calibration, test = mixed
    refined = copy.deepcopy(dm).refine_weights(calibration, "adaround", iters=100)
    x = test[0][0][:16]
    refined.map_to_hw(calibration[:1])  # raises unless fake == exact at every layer
    fake = refined(x)
    refined.integrize()
    assert torch.equal(refined(x), fake)


def test_refine_weights_is_refused_at_another_stage_and_for_range_methods(mixed):
    dm, calibration, _ = mixed
    fresh = DianaModule.from_fp_model(digits_cnn(), calibration[0][:1])
    with pytest.raises(StageError, match="refine_weights\\(\\) needs stage 'pow2', but the model is at 'quantised'"):
        fresh.refine_weights(calibration)
    with pytest.raises(ValueError, match="method 'lapq' is not one of \\['bias_correction', 'adaround', 'brecq', "
                                         "'qdrop'\\]; the others set clipping ranges"):
        copy.deepcopy(dm).refine_weights(calibration, "lapq")
    with pytest.raises(ValueError, match="PTQ method 'adaround' has no parameter\\(s\\) \\['iterations'\\]"):
        copy.deepcopy(dm).refine_weights(calibration, "adaround", iterations=10)
