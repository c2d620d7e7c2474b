"""A DIANA-friendly MobileNet for 32x32 inputs: depthwise-separable blocks (MobileNetV1-style) with plain ReLUs.

Every pointwise (1x1, dense) convolution reads a ReLU, so it may run on the analog core; the depthwise 3x3 ones run
on the digital core, which takes depthwise convolutions. Channel counts are multiples of 4 and kernels, strides and
padding follow DIANA's rules, so the report is free of findings.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU())


class MobileNetDiana(nn.Module):
    # (output channels, stride) of each depthwise-separable block
    BLOCKS = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1))

    def __init__(self, num_classes: int = 10, in_channels: int = 3, stem: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, stem, 3)]
        ch = stem
        for out, stride in self.BLOCKS:
            layers += [_conv_bn_relu(ch, ch, 3, stride, groups=ch), _conv_bn_relu(ch, out, 1)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenet_diana(num_classes: int = 10, in_channels: int = 3) -> MobileNetDiana:
    return MobileNetDiana(num_classes, in_channels)
