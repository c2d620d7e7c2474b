"""A network whose block branches on the values of a tensor: symbolic tracing cannot follow it."""

from __future__ import annotations

import torch
from torch import nn


class GatedBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:  # data-dependent control flow
            return self.conv(x)
        return x


class ControlFlowNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), GatedBlock(8))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        return self.fc(x.mean((2, 3)))


def control_flow_net(num_classes: int = 10) -> ControlFlowNet:
    return ControlFlowNet(num_classes)
