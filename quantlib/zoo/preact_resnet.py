"""Pre-activation CIFAR ResNets (He et al. 2016, "Identity Mappings in Deep Residual Networks").

A 3x3 stem conv of 16 w channels, three stages of n blocks at 16 w, 32 w, 64 w channels (x4 out for bottlenecks),
the second and third stages starting with stride 2, then BatchNorm-ReLU, global average pooling and a linear
classifier. Blocks compute BN-ReLU-conv twice (basic: two 3x3; bottleneck: 1x1, 3x3 carrying the stride, 1x1 of
4x the width; only the 3x3 is padded) and add a shortcut: the identity, or a 1x1 conv of the pre-activated input
with the block's stride where the shape changes. Depth 6n + 2 for basic blocks (8, 14, 20, 26, 32, 44, 56, 110),
9n + 2 for bottlenecks (164, ...). Every ReLU is its own ``nn.ReLU`` module, and every block's sum passes through
its own ``residual`` module (an ``nn.Identity``), so that each can become a quantiser.
"""

from __future__ import annotations

import torch
from torch import nn


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)
        self.residual = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return self.residual(out + shortcut)


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu3 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)
        self.residual = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        out = self.conv3(self.relu3(self.bn3(out)))
        return self.residual(out + shortcut)


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Conv2d | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)


class PreActResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, width: int = 1, bottleneck: bool = False,
                 in_channels: int = 3) -> None:
        super().__init__()
        block = PreActBottleneck if bottleneck else PreActBlock
        per_block = 9 if bottleneck else 6
        if depth < per_block + 2 or (depth - 2) % per_block or width < 1:
            kind = "9n + 2 (bottleneck)" if bottleneck else "6n + 2 (basic)"
            raise ValueError(f"PreActResNet: depth {depth} must be {kind} with n >= 1, and width {width} >= 1.")
        n = (depth - 2) // per_block
        self.conv1 = nn.Conv2d(in_channels, 16 * width, 3, 1, 1, bias=False)
        in_planes, stages = 16 * width, []
        for i, planes in enumerate((16 * width, 32 * width, 64 * width)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, 2 if i > 0 and j == 0 else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(x))), 1))


def preact_resnet(depth: int, num_classes: int = 10, width: int = 1, bottleneck: bool = False,
                  in_channels: int = 3) -> PreActResNet:
    """The pre-activation ResNet of ``depth`` (the module doc); ``in_channels`` 1 for the digits."""
    return PreActResNet(depth, num_classes, width, bottleneck, in_channels)

