import pytest
import torch
from torch import nn

from quantlib.editors.canonicalise import FoldBatchNorm
from quantlib.errors import EditorError
from quantlib.graphs import trace
from quantlib.zoo import randomise_batchnorm


def _check_folded(model, x):
    model = randomise_batchnorm(model, seed=3).eval()
    gm = FoldBatchNorm()(trace(model))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())
    expected = model(x)
    assert (gm(x) - expected).abs().max() <= 1e-6 * expected.abs().max()
    return gm


@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn_folds_per_channel_with_or_without_bias(bias):
    gm = _check_folded(nn.Sequential(nn.Conv2d(3, 8, 3, bias=bias), nn.BatchNorm2d(8)), torch.randn(2, 3, 6, 6))
    assert gm.get_submodule("0").bias is not None


def test_depthwise_linear_and_non_affine_batchnorm_fold():
    _check_folded(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4)), torch.randn(2, 4, 5, 5))
    _check_folded(nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6)), torch.randn(4, 5))
    _check_folded(nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, affine=False)), torch.randn(1, 2, 4, 4))


def test_folded_values_follow_the_formula():
    conv, bn = nn.Conv2d(1, 2, 1, bias=True), nn.BatchNorm2d(2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 0.5]))
        bn.running_mean.copy_(torch.tensor([0.5, 1.0]))
        bn.running_var.copy_(torch.tensor([4.0 - bn.eps, 0.25 - bn.eps]))
        bn.weight.copy_(torch.tensor([3.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.0, -1.0]))
    gm = FoldBatchNorm()(trace(nn.Sequential(conv, bn).eval()))
    folded = gm.get_submodule("0")
    assert folded.weight.flatten().tolist() == pytest.approx([3.0, -4.0])   # w * gamma / sigma
    assert folded.bias.tolist() == pytest.approx([0.75, -3.0])             # (b - mu) * gamma / sigma + beta


def test_refuses_when_conv_output_has_another_reader():
    class Leaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    with pytest.raises(EditorError) as info:
        FoldBatchNorm()(trace(Leaky()))
    assert "Cannot fold BatchNorm 'bn' into 'conv'" in str(info.value)
    assert "also read by ['add']" in str(info.value)


def test_refuses_batchnorm_without_running_statistics():
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(EditorError, match="Cannot fold BatchNorm '_1' into '_0': it has no running statistics"):
        FoldBatchNorm()(trace(model))


def test_requires_each_module_called_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(self.conv(x)))

    with pytest.raises(EditorError, match=r"\['conv'\] are called more than once; run SplitReusedModules first"):
        FoldBatchNorm()(trace(Twice()))
