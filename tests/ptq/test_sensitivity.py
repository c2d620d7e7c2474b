"""Per-layer sensitivity: one row per layer, sorted by the drop, each the accuracy with that layer alone quantised."""

import torch

from quantlib import ptq
from quantlib.data import digits_loaders
from quantlib.ptq.capture import float_mode
from quantlib.ptq.sensitivity import sensitivity
from quantlib.quantised_layers import quantised_layers
from quantlib.training import accuracy, train_epochs
from quantlib.zoo import digits_cnn


def test_each_layer_alone_quantised_sorted_by_the_accuracy_drop():
    torch.manual_seed(0)
    train, test = digits_loaders(seed=0)
    model = train_epochs(digits_cnn(), train, epochs=4, lr=3e-3).eval()
    calibration = [images for images, _ in list(train)[:4]]
    float_accuracy = accuracy(model, test)
    rows = sensitivity(model, calibration, test, "rtn", ptq.PTQOptions(2, 2, keep_head_stem_8bit=False))
    assert sorted(r.layer for r in rows) == ["classifier", "features.0", "features.3", "features.7"]
    assert [r.drop for r in rows] == sorted((r.drop for r in rows), reverse=True)
    assert all(abs(r.drop - (float_accuracy - r.accuracy)) < 0.3 for r in rows)  # BN folding: float within a sample
    assert rows[0].drop > 5.0
    gm = ptq.quantize(model, calibration, "rtn", w_bits=2, a_bits=2, keep_head_stem_8bit=False)
    layer = next(layer for layer in quantised_layers(gm) if layer.name == rows[0].layer)
    with float_mode(gm):
        layer.module.is_quantised = layer.input_quantiser.is_quantised = True
        assert accuracy(gm, test) == rows[0].accuracy
    at_8_bits = sensitivity(model, calibration, test, "rtn", ptq.PTQOptions(8, 8, keep_head_stem_8bit=False))
    assert max(r.drop for r in at_8_bits) < 1.0


def test_sensitivity_measures_the_configuration_it_is_given():
    torch.manual_seed(0)
    train, test = digits_loaders(seed=0)
    model = train_epochs(digits_cnn(), train, epochs=4, lr=3e-3).eval()
    calibration = [images for images, _ in list(train)[:4]]
    test = list(test)
    options = ptq.PTQOptions(2, 2, keep_head_stem_8bit=False, overrides={"features.3": {"w_bits": 8, "a_bits": 8}})
    rows = {r.layer: r for r in sensitivity(model, calibration, test, "rtn", options)}
    plain = {r.layer: r for r in sensitivity(model, calibration, test, "rtn", ptq.PTQOptions(2, 2,
                                                                                             keep_head_stem_8bit=False))}
    gm = ptq.quantize(model, calibration, "rtn", w_bits=2, a_bits=2, keep_head_stem_8bit=False,
                      overrides={"features.3": {"w_bits": 8, "a_bits": 8}})
    layer = next(layer for layer in quantised_layers(gm) if layer.name == "features.3")
    with float_mode(gm, keep=[layer.module, layer.input_quantiser]):
        assert accuracy(gm, test) == rows["features.3"].accuracy  # the layer at its overridden 8 bits
    assert rows["features.3"].drop < plain["features.3"].drop
