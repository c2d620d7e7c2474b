"""A keyword-spotting DS-CNN (MLPerf Tiny KWS, after Zhang et al. 2017) on 49x10 MFCC frames, 12 classes: a stem
convolution with stride 2, four depthwise-separable blocks of 64 channels, and a global average pool over the 25x5
map (a window of 125, not a power of two) before the classifier.

The reference stem is a 10x4 kernel; DIANA takes square kernels of 1, 3, 5 or 7 only, so this one is 3x3 with the
same stride and output size (25x5). Dropout as in the reference (it vanishes in canonicalisation).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(out_ch),
            nn.ReLU()]


class DSCNN(nn.Module):
    def __init__(self, num_classes: int = 12, in_channels: int = 1, width: int = 64, blocks: int = 4) -> None:
        super().__init__()
        layers = [*_conv_bn_relu(in_channels, width, 3, 2), nn.Dropout(0.2)]
        for _ in range(blocks):
            layers += [*_conv_bn_relu(width, width, 3, groups=width), *_conv_bn_relu(width, width, 1)]
        layers.append(nn.Dropout(0.4))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d((25, 5))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def ds_cnn(num_classes: int = 12, in_channels: int = 1) -> DSCNN:
    return DSCNN(num_classes, in_channels)
