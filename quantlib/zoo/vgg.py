"""A VGG-style network (Simonyan & Zisserman 2015) for 32x32 inputs: Conv-BN-ReLU stacks, max-pools, a dropout MLP."""

from __future__ import annotations

import torch
from torch import nn

VGG11_CHANNELS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, channels: tuple = VGG11_CHANNELS, num_classes: int = 10, width: float = 0.25) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for c in channels:
            if c == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = int(c * width)
                layers += [nn.Conv2d(in_ch, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                in_ch = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(in_ch, 128), nn.ReLU(True), nn.Dropout(0.5),
                                        nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.reshape(x.shape[0], -1))


def vgg11(num_classes: int = 10) -> VGG:
    return VGG(VGG11_CHANNELS, num_classes)
