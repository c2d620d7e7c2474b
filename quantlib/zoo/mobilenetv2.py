"""A MobileNetV2-style network (Sandler et al. 2018) for 32x32 inputs: inverted residuals, depthwise 3x3 convolutions,
ReLU6, a linear bottleneck, dropout before the classifier. Widths are scaled by ``width`` to keep it small."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers = [] if expand == 1 else [_conv_bn_relu6(in_ch, hidden, 1, 1)]
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    # (expansion, output channels, blocks, first stride), CIFAR-style strides
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1), (6, 160, 2, 2),
                (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10, width: float = 0.5, in_channels: int = 3) -> None:
        super().__init__()

        def scaled(c: int) -> int:
            return max(8, int(round(c * width / 8)) * 8)

        ch = scaled(32)
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, ch, 3, 1)]
        for expand, out, blocks, stride in self.SETTINGS:
            for i in range(blocks):
                layers.append(InvertedResidual(ch, scaled(out), stride if i == 0 else 1, expand))
                ch = scaled(out)
        last = scaled(1280)
        layers.append(_conv_bn_relu6(ch, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenetv2(num_classes: int = 10) -> MobileNetV2:
    return MobileNetV2(num_classes)
