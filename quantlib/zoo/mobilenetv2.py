"""MobileNetV2 (Sandler et al. 2018): inverted residuals, depthwise 3x3 convolutions, ReLU6, a linear bottleneck,
dropout before the classifier.

One class, two factories: ``mobilenetv2`` is the zoo's small CIFAR-style net (32x32 inputs, width 0.5, fewer blocks
and strides), ``mobilenet_v2`` is torchvision's ImageNet MobileNetV2, with its module names, shapes and strides, so
torchvision state dicts load key for key (see ``quantlib.zoo.torchvision_weights``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

Settings = Sequence[tuple[int, int, int, int]]
"""Per stage: (expansion, output channels, blocks, stride of the first block)."""

CIFAR_SETTINGS: Settings = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1),
                            (6, 160, 2, 2), (6, 320, 1, 1))
"""The zoo's reduced, CIFAR-style stages (for 32x32 inputs)."""

IMAGENET_SETTINGS: Settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                               (6, 160, 3, 2), (6, 320, 1, 1))
"""The paper's and torchvision's stages (for 224x224 inputs)."""


def round_to_8(channels: float) -> int:
    """The zoo's CIFAR rounding: the nearest multiple of 8 (ties to even), at least 8."""
    return max(8, int(round(channels / 8)) * 8)


def make_divisible(channels: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: the nearest multiple of ``divisor`` (at least ``divisor``), raised by one
    ``divisor`` when that would be more than 10 % below ``channels``."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: [0] conv, [1] BatchNorm, [2] ReLU6."""
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
    """``features`` (stem, inverted residuals, 1x1 head convolution), global average pool, ``classifier`` (dropout,
    linear). The defaults are the zoo's CIFAR-style net; ``mobilenet_v2`` passes torchvision's choices."""

    def __init__(self, num_classes: int = 10, width: float = 0.5, in_channels: int = 3,
                 settings: Settings = CIFAR_SETTINGS, stem_stride: int = 1,
                 round_channels: Callable[[float], int] = round_to_8, last_channel: int | None = None,
                 dropout: float = 0.2) -> None:
        """``round_channels`` turns ``c * width`` into a channel count; ``last_channel`` is the head convolution's
        width (default: 1280 scaled and rounded like the others)."""
        super().__init__()

        def scaled(c: int) -> int:
            return round_channels(c * width)

        ch = scaled(32)
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, ch, 3, stem_stride)]
        for expand, out, blocks, stride in settings:
            for i in range(blocks):
                layers.append(InvertedResidual(ch, scaled(out), stride if i == 0 else 1, expand))
                ch = scaled(out)
        last = scaled(1280) if last_channel is None else last_channel
        layers.append(_conv_bn_relu6(ch, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenetv2(num_classes: int = 10) -> MobileNetV2:
    """The zoo's small CIFAR-style MobileNetV2 (width 0.5, reduced stages, for 32x32 inputs)."""
    return MobileNetV2(num_classes)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV2:
    """torchvision's ``mobilenet_v2``: ImageNet stages and strides, its channel rounding, its state-dict keys."""
    return MobileNetV2(num_classes, width_mult, settings=IMAGENET_SETTINGS, stem_stride=2,
                       round_channels=make_divisible, last_channel=make_divisible(1280 * max(1.0, width_mult)))
