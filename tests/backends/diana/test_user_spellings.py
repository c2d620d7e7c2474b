"""Spellings people use that the chip computes, through the whole DIANA flow (fake == integer == twin == DORY file):
``torch.clamp(x, 0, 6)`` and ``nn.Hardtanh(0, 6)`` are ReLU6, ``x.contiguous()`` is nothing; other clamps and
Hardtanh ranges are left alone (refused later, naming the node)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.editors.canonicalise import canonicalise
from quantlib.errors import UnsupportedOpError


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
