"""Random DIANA-legal networks, for property tests and the random-net benchmark: every kernel 1/3/5/7 with 'same'
padding, strides 1 or 2, dense or depthwise convolutions with or without bias and BatchNorm, ReLU / ReLU6 or none,
residual blocks (identity or 1x1-conv shortcut, ReLU after the add or not), max and average pools, a global average
pool over whatever window is left (in one of its spellings), and one or two Linear layers, on odd or even input sizes
with 1 or 3 channels.

``sample_spec(rng)`` draws a description (plain data, printable); ``build_random_net(spec)`` builds it;
``random_case(seed)`` is both, with random BatchNorm statistics, calibration data and test inputs.
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.zoo import randomise_batchnorm

Spec = dict[str, Any]
KERNELS = (1, 3, 5, 7)
WIDTHS = (4, 8, 16)
GLOBAL_POOLS = ("adaptive", "mean", "window", "none")


def sample_spec(rng: random.Random) -> Spec:
    """A random network description."""
    layers = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["conv", "conv", "depthwise", "residual", "maxpool", "avgpool"])
        layers.append({"kind": kind, "kernel": rng.choice(KERNELS), "stride": rng.choice([1, 2]),
                       "width": rng.choice(WIDTHS), "bn": rng.random() < 0.6, "bias": rng.random() < 0.5,
                       "act": rng.choice([None, "relu", "relu", "relu6"]), "relu_after_add": rng.random() < 0.5,
                       "pool": rng.choice([2, 3])})
    return {"in_channels": rng.choice([1, 3]), "height": rng.choice([5, 7, 8, 9, 12, 15]),
            "width": rng.choice([5, 6, 8, 10, 11]), "layers": layers, "global_pool": rng.choice(GLOBAL_POOLS),
            "hidden": rng.choice([None, 16]), "classes": rng.randint(2, 10), "seed": rng.randrange(2 ** 16)}


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=bias)


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, relu_after_add: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(in_ch, out_ch, kernel, stride), nn.BatchNorm2d(out_ch)
        self.conv2, self.bn2 = _conv(out_ch, out_ch, kernel, 1), nn.BatchNorm2d(out_ch)
        self.shortcut = _conv(in_ch, out_ch, 1, stride, bias=True) if stride != 1 or in_ch != out_ch else None
        self.relu_after_add = relu_after_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(out) if self.relu_after_add else out


class GlobalPool(nn.Module):
    """Global average pooling written as ``x.mean((2, 3))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class RandomNet(nn.Module):
    def __init__(self, body: list[nn.Module], pool: nn.Module, head: list[nn.Module]) -> None:
        super().__init__()
        self.body, self.pool, self.head = nn.Sequential(*body), pool, nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.body(x)), 1))


def build_random_net(spec: Spec) -> tuple[nn.Module, tuple[int, int, int]]:
    """The network ``spec`` describes (weights from its seed) and its input shape (C, H, W)."""
    torch.manual_seed(spec["seed"])
    channels, h, w = spec["in_channels"], spec["height"], spec["width"]
    body: list[nn.Module] = []
    for layer in spec["layers"]:
        kind, stride = layer["kind"], layer["stride"] if min(h, w) >= 4 else 1
        if kind in ("maxpool", "avgpool"):
            k = layer["pool"]
            if min(h, w) >= k:
                body.append(nn.MaxPool2d(k, k) if kind == "maxpool" else nn.AvgPool2d(k, k))
                h, w = h // k, w // k
            continue
        if kind == "residual":
            body.append(ResidualBlock(channels, layer["width"], max(3, layer["kernel"]), stride,
                                      layer["relu_after_add"]))
            channels, h, w = layer["width"], (h - 1) // stride + 1, (w - 1) // stride + 1
            continue
        out = channels if kind == "depthwise" else layer["width"]
        body.append(_conv(channels, out, layer["kernel"], stride, channels if kind == "depthwise" else 1,
                          layer["bias"] and not layer["bn"]))
        if layer["bn"]:
            body.append(nn.BatchNorm2d(out))
        if layer["act"] is not None:
            body.append(nn.ReLU() if layer["act"] == "relu" else nn.ReLU6())
        channels, h, w = out, (h - 1) // stride + 1, (w - 1) // stride + 1
    pool = {"adaptive": nn.AdaptiveAvgPool2d(1), "mean": GlobalPool(), "window": nn.AvgPool2d((h, w)),
            "none": nn.Identity()}[spec["global_pool"]]
    features = channels * (h * w if spec["global_pool"] == "none" else 1)
    head: list[nn.Module] = [nn.Linear(features, spec["classes"])]
    if spec["hidden"]:
        head = [nn.Linear(features, spec["hidden"]), nn.ReLU(), nn.Linear(spec["hidden"], spec["classes"])]
    return RandomNet(body, pool, head), (spec["in_channels"], spec["height"], spec["width"])


def random_case(seed: int) -> tuple[Spec, nn.Module, list[torch.Tensor], torch.Tensor]:
    """The net of ``seed`` (its spec, the model in eval mode with random BatchNorms), one calibration batch of 8 and
    4 test inputs."""
    spec = sample_spec(random.Random(seed))
    model, shape = build_random_net(spec)
    randomise_batchnorm(model, spec["seed"]).eval()
    g = torch.Generator().manual_seed(spec["seed"])
    return spec, model, [torch.randn(8, *shape, generator=g)], torch.randn(4, *shape, generator=g)
