"""Pre-activation ResNets match the standard definitions (shapes, parameter counts by the paper's formula); the
quantised ones keep the first conv and classifier float and never exceed 2^k levels at a k-bit activation; the
distillation loss equals a hand computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from quantlib.distillation import DistillationLoss, QuantSpec, quantised_preact_resnet, record_levels
from quantlib.mixed_precision import switchable_layers
from quantlib.zoo.preact_resnet import preact_resnet


def expected_parameters(depth: int, bottleneck: bool, width: int = 1, classes: int = 10) -> int:
    """He et al. 2016's CIFAR pre-activation ResNet, counted by hand: 3x3 stem, 3 stages, 1x1 projections."""
    n = (depth - 2) // (9 if bottleneck else 6)
    total, c_in = 3 * 16 * width * 9, 16 * width
    for i, planes in enumerate((16 * width, 32 * width, 64 * width)):
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            if bottleneck:
                out = 4 * planes
                total += 2 * c_in + c_in * planes + 2 * planes + planes * planes * 9 + 2 * planes + planes * out
            else:
                out = planes
                total += 2 * c_in + c_in * planes * 9 + 2 * planes + planes * planes * 9
            if stride != 1 or c_in != out:
                total += c_in * out
            c_in = out
    return total + 2 * c_in + c_in * classes + classes


@pytest.mark.parametrize(("depth", "bottleneck", "width"), [(8, False, 1), (20, False, 1), (20, False, 2),
                                                              (56, False, 1), (110, False, 1), (164, True, 1)])
def test_parameter_counts_match_the_standard_definition(depth, bottleneck, width):
    model = preact_resnet(depth, width=width, bottleneck=bottleneck)
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(depth, bottleneck, width)


def test_preact_resnet20_has_272282_parameters_and_the_standard_stage_shapes():
    model = preact_resnet(20)
    assert sum(p.numel() for p in model.parameters()) == 272_282
    shapes = {}
    for name in ("layer1", "layer2", "layer3"):
        getattr(model, name).register_forward_hook(lambda m, a, out, name=name: shapes.__setitem__(name, out.shape))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert shapes == {"layer1": (2, 16, 32, 32), "layer2": (2, 32, 16, 16), "layer3": (2, 64, 8, 8)}
    bottleneck = preact_resnet(164, bottleneck=True).layer2[0]
    assert (bottleneck.conv1.kernel_size, bottleneck.conv1.padding, bottleneck.conv1.stride) == ((1, 1), (0, 0), (1, 1))
    assert (bottleneck.conv2.padding, bottleneck.conv2.stride, bottleneck.conv3.stride) == ((1, 1), (2, 2), (1, 1))
    with pytest.raises(ValueError, match="depth 21 must be 6n \\+ 2 \\(basic\\) with n >= 1"):
        preact_resnet(21)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_a_k_bit_network_has_at_most_2_to_the_k_levels_at_every_activation(bits):
    torch.manual_seed(0)
    model = quantised_preact_resnet(14, QuantSpec(bits, bits))
    layers = switchable_layers(model)
    assert layers["conv1"].bits == 32 and layers["fc"].bits == 32  # first and last layer float by default
    levels = record_levels(model, torch.randn(8, 3, 32, 32))
    activations = [lv for lv in levels if lv.bits is not None]
    assert len(activations) == 2 * 6 + 1 and all(lv.bits == bits for lv in activations)
    assert all(lv.distinct <= 2 ** bits and 0.0 <= lv.minimum and lv.maximum <= 1.0 for lv in activations)
    assert max(lv.distinct for lv in activations) == 2 ** bits  # the levels are used
    assert levels[0].layer == "conv1" and levels[0].distinct > 2 ** 8  # the float stem
    assert levels[-1].layer == "fc"


def test_the_spec_is_checked_and_first_last_can_be_quantised():
    with pytest.raises(ValueError, match="QuantSpec: w_bits=17 must be an integer from 1 to 16, or 32"):
        QuantSpec(17, 4)
    with pytest.raises(ValueError, match="method 'apot' is not one of \\['dorefa', 'pact', 'lsq'\\]"):
        QuantSpec(4, 4, "apot")
    with pytest.raises(ValueError, match="residual 'int8' is not one of \\['float', 'quantised'\\]"):
        quantised_preact_resnet(8, QuantSpec(4, 4), residual="int8")
    model = quantised_preact_resnet(8, QuantSpec(4, 4, "pact"), quantise_first_last=True)
    assert switchable_layers(model)["conv1"].bits == 4 and switchable_layers(model)["relu"].quantiser == "pact"


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_lsq_networks_and_quantised_residual_sums_have_at_most_2_to_the_k_levels(bits):
    torch.manual_seed(0)
    model = quantised_preact_resnet(8, QuantSpec(bits, bits, "lsq"), residual="quantised")
    layers = switchable_layers(model)
    assert layers["layer1.0.conv1"].weight_quantiser == "lsq" and layers["layer1.0.relu1"].quantiser == "lsq"
    model.train()(torch.randn(8, 3, 32, 32))  # the first batch sets the LSQ steps
    levels = record_levels(model, torch.randn(8, 3, 32, 32))
    residual = [lv for lv in levels if lv.layer.endswith(".residual")]
    assert [lv.layer for lv in residual] == ["layer1.0.residual", "layer2.0.residual", "layer3.0.residual"]
    assert all(lv.bits == bits and lv.distinct <= 2 ** bits and lv.minimum < 0 < lv.maximum for lv in residual)
    activations = [lv for lv in levels if lv.bits is not None and lv not in residual]
    assert len(activations) == 2 * 3 + 1 and all(0.0 <= lv.minimum and lv.distinct <= 2 ** bits for lv in activations)
    weights = layers["layer2.0.conv2"]
    step = weights.steps[str(bits)]
    unscaled = weights.quantised_weight().detach() / step.detach()
    assert unscaled.unique().numel() <= 2 ** bits and torch.allclose(unscaled, unscaled.round(), atol=1e-5)
    float_residual = quantised_preact_resnet(8, QuantSpec(bits, bits, "lsq"))
    assert isinstance(float_residual.layer1[0].residual, torch.nn.Identity)  # the default: a float stream


def test_the_distillation_loss_is_hintons_by_hand():
    torch.manual_seed(0)
    student = torch.nn.Linear(3, 4)
    teacher = torch.nn.Linear(3, 4)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    t, lam = 3.0, 0.7
    value, logits = DistillationLoss(teacher, temperature=t, alpha=lam)(student, x, y)
    with torch.no_grad():
        p_t = F.softmax(teacher(x) / t, dim=1)
        log_p_s = F.log_softmax(student(x) / t, dim=1)
        kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
        expected = (1 - lam) * F.cross_entropy(student(x), y) + lam * t * t * kl
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(logits, student(x))
