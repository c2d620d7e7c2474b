"""Adam on a few tensors, for PTQ's small per-layer optimisations: the update of Kingma & Ba (2015) with torch.optim's
defaults, in five ops per tensor, and without the 2 s import of torch._dynamo that torch.optim's first step
costs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class Adam:
    """Adam over ``params`` (tensors with ``requires_grad``); ``step(grads)`` takes the gradients in the same order."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads: Sequence[torch.Tensor]) -> None:
        self.t += 1
        b1, b2 = self.betas
        root2 = math.sqrt(1 - b2 ** self.t)  # lr m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps), rearranged
        with torch.no_grad():
            for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.addcdiv_(m, v.sqrt().add_(self.eps * root2), value=-self.lr * root2 / (1 - b1 ** self.t))
