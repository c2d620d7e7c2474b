"""The MLPerf Tiny image-classification ResNet-8 (CIFAR-10, 32x32): a 16-channel stem, three residual stacks of 16,
32 and 64 channels (the second and third halve the resolution, with a biased 1x1 convolution on the shortcut and no
BatchNorm there, as the reference model has), an 8x8 average pool and one dense layer.

Written as such models usually are: functional ReLUs and ``out +=``. PyTorch pads symmetrically where the Keras
reference pads 'same' (one more row and column at the bottom right for stride 2): DIANA takes symmetric padding only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Stack(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=True) if stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu(out)


class ResNet8MLPerf(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.stack1, self.stack2, self.stack3 = Stack(16, 16, 1), Stack(16, 32, 2), Stack(32, 64, 2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.stack3(self.stack2(self.stack1(out)))
        out = F.avg_pool2d(out, 8)
        return self.fc(torch.flatten(out, 1))


def resnet8_mlperf(num_classes: int = 10, in_channels: int = 3) -> ResNet8MLPerf:
    return ResNet8MLPerf(num_classes, in_channels)
