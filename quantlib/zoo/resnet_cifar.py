"""CIFAR-style ResNets (He et al. 2016, section 4.2): 6n+2 layers, 16/32/64 channels; shortcuts where the shape
changes are 1x1 convolutions with BatchNorm (option B) or, as in the paper's CIFAR experiments and the most used
PyTorch port, option A: subsample by 2 and pad the new channels with zeros,
``LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4)))``.

Written the way such models are usually published: functional ReLUs, ``out += shortcut`` and a ``view`` to flatten,
so that canonicalisation has real work to do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LambdaLayer(nn.Module):
    """A module that applies a function (how the option-A shortcut is usually written)."""

    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if (stride != 1 or in_planes != planes) and shortcut == "A":
            pad = (planes - in_planes) // 2
            self.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0))
        elif stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNetCifar(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, shortcut: str = "B") -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 (8, 20, 32, 44, 56, 110, ...), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut={shortcut!r}: use 'A' (subsample and zero-pad) or 'B' (1x1 conv + BN).")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes, layers = 16, []
        for stage, width in enumerate((16, 32, 64)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(planes, width, 2 if stage > 0 and i == 0 else 1, shortcut))
                planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def resnet8(num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    return ResNetCifar(8, num_classes, in_channels)


def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "B") -> ResNetCifar:
    return ResNetCifar(20, num_classes, in_channels, shortcut)


def resnet110(num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    return ResNetCifar(110, num_classes, in_channels)
