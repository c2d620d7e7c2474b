import pytest
import torch
from torch import nn

from quantlib.backends.diana.hardware_rules import (
    adc_findings,
    analog_eligibility,
    conv_findings,
    linear_findings,
    shift_findings,
)


def _rules(findings):
    return sorted(f.rule for f in findings)


def test_legal_convs_have_no_findings():
    assert conv_findings("c", nn.Conv2d(16, 32, 3, 1, 1), "analog") == []
    assert conv_findings("c", nn.Conv2d(16, 16, 5, 2, 2, groups=16), "digital") == []
    assert conv_findings("c", nn.Conv2d(8, 8, 1), "digital") == []


def test_each_broken_rule_is_one_finding_naming_layer_and_fix():
    findings = conv_findings("layer1.0.conv1", nn.Conv2d(16, 16, 2, padding=1), "digital")
    assert _rules(findings) == ["kernel-size"]
    assert str(findings[0]).startswith("layer1.0.conv1: [kernel-size] kernel 2x2 is not one of 1x1, 3x3, 5x5, 7x7.")
    assert "Fix: use a square kernel" in str(findings[0])
    # the fixes together make the layer legal: with dilation 1 a 3x3 kernel needs padding 1, not 2
    assert _rules(conv_findings("d", nn.Conv2d(16, 16, 3, padding=1, dilation=2), "digital")) == ["dilation"]
    assert _rules(conv_findings("d", nn.Conv2d(16, 16, 3, padding=2, dilation=2), "digital")) == ["dilation",
                                                                                                    "padding"]
    assert _rules(conv_findings("s", nn.Conv2d(16, 16, 3, stride=3, padding=1), "digital")) == ["stride"]
    grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
    assert _rules(conv_findings("g", grouped, "analog")) == ["analog-groups"]
    assert _rules(conv_findings("g", grouped, "digital")) == ["digital-groups"]
    depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    assert _rules(conv_findings("dw", depthwise, "analog")) == ["analog-groups"]
    assert _rules(conv_findings("r", nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect"), "digital")) == [
        "padding"]


def test_odd_channel_counts_are_warnings_only():
    [finding] = conv_findings("stem", nn.Conv2d(3, 16, 3, padding=1), "digital")
    assert (finding.rule, finding.severity) == ("channels-multiple-of-4", "warning")
    assert "input channels 3 not divisible by 4" in finding.message
    assert _rules(linear_findings("fc", nn.Linear(64, 10))) == ["channels-multiple-of-4"]
    assert analog_eligibility("stem", nn.Conv2d(3, 16, 3, padding=1)) == []  # warnings do not block the analog core


def test_analog_eligibility_and_shift():
    assert _rules(analog_eligibility("fc", nn.Linear(8, 8))) == ["analog-op"]
    assert _rules(analog_eligibility("k2", nn.Conv2d(8, 8, 2, padding=1))) == ["kernel-size"]
    assert _rules(analog_eligibility("p0", nn.Conv2d(8, 8, 3))) == ["padding"]
    assert shift_findings("l", 31) == [] and _rules(shift_findings("l", 32)) == ["shift-range"]
    assert _rules(shift_findings("l", -1)) == ["shift-range"]


def test_the_adc_only_shifts():
    assert adc_findings("a", torch.ones(())) == []
    [finding] = adc_findings("a", torch.tensor(4.0))
    assert (finding.rule, finding.severity) == ("adc-shift", "error")
    assert "multiply its sums by [4.0]" in finding.message and finding.fix.startswith("recalibrate the ADC")



CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")


@pytest.mark.parametrize("conv", [
    nn.Conv2d(8, 8, (10, 4)), nn.Conv2d(8, 8, 2, padding=1), nn.Conv2d(8, 8, 4, stride=3),
    nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.Conv2d(8, 8, 5, padding=1, groups=2),
    nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.Conv2d(8, 8, (3, 5), stride=(1, 2), padding=(1, 2)),
    nn.Conv2d(8, 8, 9, padding=4), nn.Conv2d(8, 8, 6, stride=2),
], ids=lambda c: f"k{c.kernel_size}s{c.stride}p{c.padding}d{c.dilation}g{c.groups}{c.padding_mode}")
@pytest.mark.parametrize("size", [15, 16])
def test_the_suggested_fixes_together_give_a_legal_same_padded_conv(conv, size):
    findings = conv_findings("c", conv, "digital")
    assert [f for f in findings if f.severity == "error" and f.suggestion is None] == []
    args = {a: getattr(conv, a) for a in CONV_ARGS}
    for f in findings:
        args.update(f.suggestion or {})
    fixed = nn.Conv2d(**args)
    assert [f.rule for f in conv_findings("c", fixed, "digital") if f.severity == "error"] == []
    k, s = fixed.kernel_size[0], fixed.stride[0]
    assert fixed.padding == (k // 2, k // 2)
    assert all(f"padding={k // 2}" in f.fix for f in findings if f.rule == "padding")
    out = fixed(torch.randn(1, 8, size, size))
    assert out.shape[-2:] == ((size + s - 1) // s,) * 2  # 'same': ceil(size / stride)
