"""Spellings people use that the chip computes, through the whole DIANA flow (fake == integer == twin == DORY file):
``torch.clamp(x, 0, 6)`` and ``nn.Hardtanh(0, 6)`` are ReLU6, ``x.contiguous()`` is nothing; other clamps and
Hardtanh ranges are left alone (refused later, naming the node)."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.editors.canonicalise import canonicalise
from quantlib.errors import HardwareRuleError, UnsupportedOpError


class Spellings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.Hardtanh(0.0, 6.0)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.clamp(self.conv1(x), 0, 6).contiguous()
        x = self.act(self.conv2(x))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("analog", ["none", "auto"])
def test_clamp_hardtanh_and_contiguous_go_through_the_whole_flow(tmp_path, analog):
    torch.manual_seed(0)
    x = torch.randn(16, 3, 6, 6)
    dm = DianaModule.from_fp_model(Spellings().eval(), x[:1], analog=analog)
    assert [type(m).__name__ for m in dm.gm.modules() if type(m).__name__ == "QReLU"] == ["QReLU", "QReLU"]
    assert [dm.gm.get_submodule(n).ceiling for n in ("relu6", "act")] == [6.0, 6.0]
    dm.calibrate([x]).map_scales([x]).clip_scales_pow2().map_to_hw([x]).integrize()
    result = dm.export(tmp_path / "out", "net", verify_on=x)
    assert result.mismatches == 0 and len(result.dory_comparisons) == 4
    assert dm.cores == {"conv1": "digital", "conv2": "analog" if analog == "auto" else "digital", "head": "digital"}


def test_other_clamps_and_hardtanh_ranges_are_not_relus():
    class Other(nn.Module):
        def forward(self, x):
            return F.hardtanh(torch.clamp(x, -1, 1), -2.0, 2.0)

    gm = canonicalise(Other())
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [torch.clamp]
    assert [type(m).__name__ for m in gm.modules()][1:] == ["Hardtanh"]
    with pytest.raises(UnsupportedOpError, match="Hardtanh|clamp"):
        DianaModule.from_fp_model(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Hardtanh(-2.0, 2.0), nn.Flatten(),
                                                nn.Linear(8, 2)), torch.randn(1, 1, 2, 2)).calibrate(
            [torch.randn(4, 1, 2, 2)]).map_scales().clip_scales_pow2().map_to_hw()


class MLPerfResNet8AsPublished(nn.Module):
    """The MLPerf-Tiny ResNet-8 as its PyTorch ports write the head: ``F.avg_pool2d(out, out.size()[3])``."""

    def __init__(self) -> None:
        super().__init__()
        from quantlib.zoo import resnet8_mlperf

        self.body = resnet8_mlperf()

    def forward(self, x):
        b = self.body
        out = F.relu(b.bn(b.conv(x)))
        out = b.stack3(b.stack2(b.stack1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return b.fc(out.view(out.size(0), -1))


@pytest.mark.parametrize("analog", ["none", "auto"])
def test_the_mlperf_resnet8_with_a_pool_read_from_the_shape_goes_through_the_flow(tmp_path, analog):
    from quantlib.zoo import randomise_batchnorm

    torch.manual_seed(0)
    model = randomise_batchnorm(MLPerfResNet8AsPublished()).eval()
    x = torch.randn(8, 3, 32, 32)
    dm = DianaModule.from_fp_model(model, x[:1], analog=analog)
    dm.calibrate([x]).map_scales([x]).clip_scales_pow2().map_to_hw([x]).integrize()
    result = dm.export(tmp_path / "out", "resnet8", verify_on=x)
    assert result.mismatches == 0 and len(result.dory_comparisons) == 14


@pytest.mark.parametrize("analog", ["none", "auto"])
def test_the_cifar_resnet20_with_option_a_shortcuts_goes_through_the_flow(tmp_path, analog):
    """The most used CIFAR ResNet-20 port: ``LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)))``."""
    from quantlib.zoo import randomise_batchnorm, resnet20

    torch.manual_seed(0)
    model = randomise_batchnorm(resnet20(shortcut="A")).eval()
    x = torch.randn(8, 3, 32, 32)
    dm = DianaModule.from_fp_model(model, x[:1], analog=analog)
    shortcuts = [dm.gm.get_submodule(f"layer{i}.0.shortcut.shortcut_conv") for i in (2, 3)]
    assert [(m.in_channels, m.out_channels, m.stride) for m in shortcuts] == [(16, 32, (2, 2)), (32, 64, (2, 2))]
    assert not any(m.weight.requires_grad for m in shortcuts)  # the shortcut has no parameters as written
    dm.calibrate([x]).map_scales([x]).clip_scales_pow2().map_to_hw([x]).integrize()
    result = dm.export(tmp_path / "out", "resnet20", verify_on=x)
    assert result.mismatches == 0 and len(result.dory_comparisons) == 32 and result.errors == []
    assert sum(core == "analog" for core in dm.cores.values()) == (0 if analog == "none" else 20)


class ManyRefusals(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 8, 3, padding=1), nn.Hardswish()
        self.tall, self.fc = nn.Conv2d(8, 8, (10, 4)), nn.Linear(8, 2)

    def forward(self, x):
        y = self.act(self.conv(x))
        y = torch.cat([y, F.silu(y)], 1)[:, :8] * 0.5
        y = torch.sigmoid(F.interpolate(y, scale_factor=2.0)) * y.repeat(1, 1, 2, 2)
        y = F.leaky_relu(self.tall(y))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def test_every_refusal_and_broken_rule_is_reported_at_once_before_anything_runs():
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(UnsupportedOpError) as error:
        DianaModule.from_fp_model(ManyRefusals(), x, ineligible="error")
    text = str(error.value)
    entries = re.findall(r"^  - (?:<top level>|\S+) \((.+?)\) at ", text, re.MULTILINE)
    assert entries == ["nn.Hardswish", "F.silu", "torch.cat", "operator.getitem", "operator.mul", "F.interpolate",
                       "torch.sigmoid", "x.repeat()", "operator.mul", "nn.LeakyReLU"]
    assert "2 hardware rule(s) of DIANA are broken:\n  - tall: [kernel-size] kernel 10x4" in text
    assert "tall: [padding] padding (0, 0) (zeros) is not the symmetric 'same' zero padding for the 7x7 kernel" in text
    line = ManyRefusals.forward.__code__.co_firstlineno
    assert f"act (nn.Hardswish) at {__file__}:{line + 1}: y = self.act(self.conv(x))" in text
    assert text.endswith("Nothing was changed; fix them all, then try again.")


class TallKernel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.tall, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, (10, 4)), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.tall(F.relu(self.conv(x))), 1), 1))


def test_broken_hardware_rules_are_known_before_training(caplog):
    dm = DianaModule.from_fp_model(TallKernel())
    assert [(f.layer, f.rule, f.severity) for f in dm.findings] == [
        ("conv", "channels-multiple-of-4", "warning"), ("tall", "kernel-size", "error"), ("tall", "padding", "error"),
        ("fc", "channels-multiple-of-4", "warning")]
    assert [f.suggestion for f in dm.findings[1:3]] == [{"kernel_size": 7}, {"padding": 3, "padding_mode": "zeros"}]
    assert "2 DIANA hardware rule(s) are broken; the model cannot be exported until they are fixed" in caplog.text
    with pytest.raises(HardwareRuleError, match=r"^2 hardware rule\(s\) of DIANA are broken:\n  - tall: \[kernel"):
        DianaModule.from_fp_model(TallKernel(), ineligible="error")
