"""1-D ResNets for sensor time series ([N, C, T]): a Conv1d stem (kernel 7, stride 2) and max pool, stages of basic
blocks (two kernel-3 Conv1d with BatchNorm, a 1x1 projection where the shape changes), global average pooling and
a linear classifier. The defaults fit PAMAP2 windows (40 channels, 12 activities)."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock1d(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv1d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm1d(planes))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet1d(nn.Module):
    def __init__(self, layers: list[int], in_channels: int = 40, num_classes: int = 12, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool1d(3, 2, 1)
        stages, in_planes = [], width
        for i, count in enumerate(layers):
            planes = width * 2 ** i
            stages.append(nn.Sequential(*[BasicBlock1d(in_planes if j == 0 else planes, planes,
                                                       2 if i > 0 and j == 0 else 1) for j in range(count)]))
            in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet1d10(in_channels: int = 40, num_classes: int = 12, width: int = 32) -> ResNet1d:
    """Four stages of one basic block (10 layers with the stem and classifier); width 32."""
    return ResNet1d([1, 1, 1, 1], in_channels, num_classes, width)


def resnet1d18(in_channels: int = 40, num_classes: int = 12, width: int = 64) -> ResNet1d:
    """ResNet-18's stages [2, 2, 2, 2] in 1-D."""
    return ResNet1d([2, 2, 2, 2], in_channels, num_classes, width)
