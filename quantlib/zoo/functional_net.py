"""A network written the way research code often is: functional activations and pools in every spelling, in-place
ops, ``+=`` and ``torch.add`` residuals, an identity, a functional dropout, and modules called more than once."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FunctionalNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.shared = nn.Conv2d(16, 16, 1)  # called twice: shared weights
        self.act = nn.ReLU()  # called three times
        self.skip = nn.Identity()
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(x)).relu()
        y = torch.relu(y + self.skip(x))
        z = self.act(self.shared(y))
        z = self.act(self.shared(z))
        z += y
        z = self.act(z)
        z = F.max_pool2d(z, 2)
        z = torch.add(z, F.relu(z))
        z = F.relu6(self.bn3(self.conv3(z)))
        z = z.relu_()
        z = torch.clamp(z, 0, 6)
        z = F.avg_pool2d(z, 2)
        z = F.dropout(z, 0.1, training=self.training)
        z = z.reshape(z.size(0), -1)
        return self.fc(z)


def functional_net(num_classes: int = 10) -> FunctionalNet:
    return FunctionalNet(num_classes)
