"""Switchable precision: configurations are per layer, independent and reproducible; k = 32 is the float layer; the
joint step averages its passes' losses and takes one optimiser step; switchable BatchNorm keeps its statistics
apart; PACT, SAT and the refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from quantlib import mixed_precision as mp
from quantlib.mixed_precision.layers import SwitchableActivation, SwitchableBatchNorm, SwitchableConv2d, sat_rescale
from quantlib.quantizers import dorefa_activations, dorefa_weights
from quantlib.training import TrainConfig, fit
from quantlib.zoo import digits_cnn


def test_random_configurations_are_per_layer_independent_and_reproducible_from_a_seed():
    model = mp.switchable(digits_cnn(), [2, 4, 8])
    names = list(mp.switchable_layers(model))
    assert names == ["features.0", "features.2", "features.3", "features.5", "features.7", "features.9",
                     "classifier"]
    draws = [mp.set_random_bitwidths(model, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert draws[0] == draws[1] == mp.bitwidth_config(model)  # the same seed, the same configuration
    g = torch.Generator().manual_seed(0)
    configurations = [mp.set_random_bitwidths(model, generator=g) for _ in range(300)]
    for name in names:  # every layer takes every option about a third of the time
        counts = [sum(c[name] == k for c in configurations) for k in (2, 4, 8)]
        assert all(70 <= n <= 130 for n in counts), (name, counts)
    a, b = names[0], names[1]  # two layers agree a third of the time, as independent draws do
    same = sum(c[a] == c[b] for c in configurations)
    assert 70 <= same <= 130
    assert len({tuple(c.values()) for c in configurations}) > 250


def test_a_configuration_round_trips_and_bad_ones_are_refused():
    model = mp.switchable(digits_cnn(), [2, 4, 8], layer_options={"classifier": [8]})
    config = mp.set_random_bitwidths(model, generator=torch.Generator().manual_seed(3))
    assert config["classifier"] == 8
    mp.set_uniform_bitwidth(model, 2)
    assert set(mp.bitwidth_config(model).values()) == {2, 8}  # the single-option head keeps its 8 bits
    mp.apply_bitwidth_config(model, config)
    assert mp.bitwidth_config(model) == config
    with pytest.raises(ValueError, match=r"unknown layers \['nosuch'\], layers not given \['classifier'\]"):
        mp.apply_bitwidth_config(model, {**{k: v for k, v in config.items() if k != "classifier"}, "nosuch": 2})
    with pytest.raises(ValueError, match="layer 'features.0' has options \\[2, 4, 8\\], not 3"):
        mp.apply_bitwidth_config(model, {**config, "features.0": 3})
    with pytest.raises(ValueError, match=r"16 bits is not an option of \['features.0', "):
        mp.set_uniform_bitwidth(model, 16)


def test_32_bits_is_the_float_model_and_k_bits_the_dorefa_quantisers():
    torch.manual_seed(0)
    float_model = digits_cnn().eval()
    model = mp.switchable(float_model, [4, 32], batchnorm="shared").eval()
    x = torch.randn(8, 1, 8, 8)
    mp.set_uniform_bitwidth(model, 32)
    with torch.no_grad():
        assert torch.equal(model(x), float_model(x))
    mp.set_uniform_bitwidth(model, 4)
    conv = model.features[0]
    assert torch.equal(conv.quantised_weight(), dorefa_weights(float_model.features[0].weight, 4))
    act = model.features[2]
    y = torch.tensor([-1.0, 0.1, 0.5, 2.0])
    assert torch.equal(act(y), dorefa_activations(F.relu(y), 4))
    assert act(y).tolist() == [0.0, pytest.approx(2 / 15), pytest.approx(8 / 15), 1.0]  # 7.5 rounds to even


def test_the_joint_step_averages_its_passes_losses_and_steps_once():
    torch.manual_seed(0)
    model = mp.switchable(nn.Sequential(nn.Linear(3, 2, bias=False)), [1, 32])
    layer = model[0]
    w0 = layer.weight.detach().clone()
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    seed = 5
    replay = torch.Generator().manual_seed(seed)  # the two configurations the step will draw
    bits = [mp.set_random_bitwidths(model, generator=replay)["0"] for _ in range(2)]

    def gradient(weight: torch.Tensor) -> torch.Tensor:  # dCE/dW by hand: (softmax(x W^T) - onehot)^T x / B
        p = F.softmax(x @ weight.T, dim=1)
        return (p - F.one_hot(y, 2).float()).T @ x / len(y)

    quantised = {1: torch.where(w0 >= 0, 1.0, -1.0) * w0.abs().mean(), 32: w0}  # sign * mean|w| at 1 bit
    expected = sum(gradient(quantised[k]) for k in bits) / 2  # straight through: the gradient at the quantised W
    calls, steps = [], []
    model.register_forward_hook(lambda *_: calls.append(1))
    module, loss = mp.joint_quantization(model, [1, 32], passes=2, generator=torch.Generator().manual_seed(seed))
    handle = register_optimizer_step_post_hook(lambda *_: steps.append(1))
    try:
        fit(module, [(x, y)], TrainConfig(epochs=1, lr=1.0, optimiser="sgd", scheduler="none", device="cpu",
                                          seed=None, progress=False), loss=loss)
    finally:
        handle.remove()
    assert len(calls) == 2 and len(steps) == 1
    torch.testing.assert_close(layer.weight.detach(), w0 - expected, rtol=0, atol=1e-6)  # one SGD step, lr 1


def test_switchable_batchnorm_keeps_separate_statistics_per_bit_width_of_the_layer_it_reads():
    torch.manual_seed(0)
    model = mp.switchable(digits_cnn(), [2, 8])
    bn = model.features[1]
    assert isinstance(bn, SwitchableBatchNorm) and bn.source is model.features[0]
    x = torch.randn(32, 1, 8, 8)
    model.train()
    mp.set_uniform_bitwidth(model, 2)
    with torch.no_grad():
        model(x)
    two, eight = bn.norms["2"], bn.norms["8"]
    assert int(two.num_batches_tracked) == 1 and int(eight.num_batches_tracked) == 0
    assert torch.equal(eight.running_mean, torch.zeros(16))
    with torch.no_grad():
        expected = 0.1 * F.conv2d(x, dorefa_weights(model.features[0].weight, 2), padding=1).mean((0, 2, 3))
    torch.testing.assert_close(two.running_mean, expected, rtol=1e-4, atol=1e-6)


def test_recalibration_replaces_the_statistics_by_those_of_the_current_configuration():
    torch.manual_seed(0)
    model = mp.switchable(digits_cnn(), [2, 8], batchnorm="recalibrate")
    bn = model.features[1]
    assert isinstance(bn, nn.BatchNorm2d)
    bn.running_mean.fill_(5.0)
    mp.set_uniform_bitwidth(model, 2)
    batches = [(torch.randn(16, 1, 8, 8), torch.zeros(16, dtype=torch.long)) for _ in range(3)]
    mp.recalibrate_batchnorm(model.eval(), batches, 2)
    assert not model.training and bn.momentum == 0.1
    with torch.no_grad():
        conv = [F.conv2d(b[0], dorefa_weights(model.features[0].weight, 2), padding=1) for b in batches[:2]]
    torch.testing.assert_close(bn.running_mean, torch.cat(conv).mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_pact_clips_are_learned_per_bit_width_with_switchable_clipping():
    act = SwitchableActivation([2, 4], "pact", switchable_clipping=True)
    assert sorted(act.clips) == ["2", "4"]
    x = torch.tensor([-1.0, 1.0, 3.0, 7.0, 9.0])
    act.set_bits(2)
    y = act(x)
    assert y.tolist() == [0.0, 0.0, 4.0, 6.0, 6.0]  # clamp to [0, 6], 3 steps of 2, 1.5 steps rounded to even
    y.sum().backward()
    assert act.clips["2"].grad.item() == 2.0 and act.clips["4"].grad is None  # 1 for each x above the clip
    shared = SwitchableActivation([2, 4], "pact")
    assert list(shared.clips) == ["shared"]


def test_lsq_steps_start_from_the_first_batch_one_per_bit_width_and_are_learned():
    act = SwitchableActivation([2, 4], "lsq")
    x = torch.tensor([-1.0, 0.5, 1.0, 2.0, 6.5])
    act.set_bits(2)
    y = act(x)  # mean |relu(x)| = 2, q_p = 3: step 2 * 2 / sqrt(3) = 2.31; x / step = 0, .22, .43, .87, 2.8
    step = 4 / 3 ** 0.5
    assert act.steps["2"].item() == pytest.approx(step) and act.steps["4"].item() == 0.0  # 4 bits: not yet seen
    assert torch.allclose(y, torch.tensor([0.0, 0.0, 0.0, step, 3 * step]))
    y.sum().backward()
    assert act.steps["2"].grad.item() != 0.0 and act.steps["4"].grad is None
    act.load_state_dict(SwitchableActivation([2, 4], "lsq").state_dict())  # unset steps: set again from x
    act(x * 2)
    assert act.steps["2"].item() == pytest.approx(2 * step)
    conv = mp.switchable(nn.Sequential(nn.Conv2d(2, 3, 3)), [1, 3], weight_quantization="lsq")[0]
    w = conv.weight.detach()
    for bits, q_n, q_p in ((3, 4, 3), (1, 1, 1)):
        conv.set_bits(bits)
        levels = conv.quantised_weight().detach() / conv.steps[str(bits)].detach()
        assert conv.steps[str(bits)].item() == pytest.approx(2 * w.abs().mean().item() / q_p ** 0.5)
        assert torch.allclose(levels, levels.round(), atol=1e-5) and levels.min() >= -q_n and levels.max() <= q_p
        signed_bits, largest = conv.integer_weights()
        assert signed_bits == max(bits, 2) and torch.equal(largest, levels.round().abs().flatten(1).amax(1))
    assert sorted(torch.unique(levels).tolist()) == [-1.0, 1.0]  # 1 bit: +-step


def test_sat_rescales_the_quantised_weights_to_the_fan_out_variance():
    conv = mp.switchable(nn.Sequential(nn.Conv2d(3, 8, 3)), [4], sat_weight_normalization=True)[0]
    assert isinstance(conv, SwitchableConv2d)
    w_q = conv.quantised_weight()
    assert w_q.std().item() == pytest.approx(1 / (8 * 9) ** 0.5, rel=1e-5)
    torch.testing.assert_close(w_q, sat_rescale(dorefa_weights(conv.weight, 4), 72))


class FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.relu(self.fc(x))


def test_bad_input_is_refused_with_the_layer_the_option_or_the_line():
    with pytest.raises(ValueError, match=r"bit-width options \[0, 4\] must be a non-empty list of integers from 1 to "
                                         r"16 or 32 \(full precision\); not allowed: \[0\]"):
        mp.switchable(digits_cnn(), [0, 4])
    with pytest.raises(ValueError, match=r"layer_options names \['fc'\], which are not Conv1d / Conv2d / Linear"):
        mp.switchable(digits_cnn(), [4], layer_options={"fc": [8]})
    with pytest.raises(ValueError, match="batchnorm 'per_layer' is not one of \\['switchable', 'shared', "):
        mp.switchable(digits_cnn(), [4], batchnorm="per_layer")


def test_functional_relus_become_switchable_activation_modules():
    torch.manual_seed(0)
    float_model = FunctionalRelu().eval()
    model = mp.switchable(float_model, [2, 32])
    assert isinstance(model, torch.fx.GraphModule) and list(mp.switchable_layers(model)) == ["fc", "relu"]
    x = torch.randn(4, 4)
    mp.set_uniform_bitwidth(model, 32)
    assert torch.equal(model(x), float_model(x))
    mp.set_uniform_bitwidth(model, 2)
    assert torch.equal(model(x), dorefa_activations(F.relu(model.fc(x)), 2))


def test_a_resumed_joint_run_draws_the_configurations_of_the_uninterrupted_one(tmp_path):
    from quantlib.data import digits_loaders

    def run(epochs: int, folder, resume: bool = False) -> dict:
        torch.manual_seed(0)
        model = mp.switchable(digits_cnn(), [2, 4, 8])
        module, loss = mp.joint_quantization(model, [2, 4, 8], passes=2)  # torch's global generator
        train, _ = digits_loaders(seed=0)
        fit(module, train, TrainConfig(epochs=epochs, lr=3e-3, scheduler="none", device="cpu", seed=0, progress=False,
                                       checkpoint_dir=folder, resume=resume), loss=loss)
        return model.state_dict()

    straight = run(2, tmp_path / "a")
    run(1, tmp_path / "b")
    resumed = run(2, tmp_path / "b", resume=True)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_recalibration_of_a_switchable_batchnorm_keeps_the_other_bit_widths_statistics():
    torch.manual_seed(0)
    model = mp.switchable(digits_cnn(), [2, 8])
    bn = model.features[1]
    bn.norms["8"].running_mean.fill_(3.0)
    mp.set_uniform_bitwidth(model, 2)
    mp.recalibrate_batchnorm(model, [(torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))], 1)
    assert torch.equal(bn.norms["8"].running_mean, torch.full((16,), 3.0))
    assert int(bn.norms["2"].num_batches_tracked) == 1


def test_recursive_distillation_teaches_from_every_layers_highest_option():
    torch.manual_seed(0)
    model = mp.switchable(digits_cnn(), [2, 4], layer_options={"classifier": [8]})
    module, loss = mp.recursive_distillation(model, [2, 4], passes=1, generator=torch.Generator().manual_seed(0))
    seen = []
    model.register_forward_pre_hook(lambda *_: seen.append(mp.bitwidth_config(model)))
    value, logits = loss(module.train(), torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert set(seen[0].values()) == {4, 8} and seen[0]["classifier"] == 8 and len(seen) == 2
    assert logits.shape == (4, 10) and value.item() > 0
    with pytest.raises(ValueError, match="joint_quantization_batch_size=0 must be an integer >= 1"):
        mp.recursive_distillation(model, [2, 4], passes=0)
