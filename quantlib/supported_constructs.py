"""The constructs users write, each as a small model, and the table of what each target takes: made by running the
pre-flight check on every example (``python -m quantlib.cli.constructs`` prints it; the README holds it, and a
test checks that they agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from quantlib.editors.canonicalise import canonicalise
from quantlib.preflight import Constructs, preflight
from quantlib.targets import Target

Op = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class ConstructNet(nn.Module):
    """conv -> ReLU -> the construct -> global pool (unless the construct pools) -> linear: the construct between
    quantised layers."""

    def __init__(self, op: Op, pool: bool = True) -> None:
        super().__init__()
        self.op, self.pool = op, pool
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.Identity()
        self.fc = nn.LazyLinear(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.op(self, F.relu(self.conv(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1) if self.pool else y, 1))


class MLPNet(nn.Module):
    """An MLP on 2-D inputs with a BatchNorm1d after its first Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(x))))


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(3, 4, 3), nn.LazyLinear(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


@dataclass(frozen=True)
class Example:
    """One construct as users spell it, in a model that computes it; ``with_shapes``: traced with an example input."""

    spelling: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...] = (3, 8, 8)
    with_shapes: bool = True

    def model(self) -> nn.Module:
        """The model, lazy layers materialised, BatchNorm statistics set (eval mode)."""
        model = self.build()
        model.eval()
        with torch.no_grad():
            model(torch.randn(2, *self.input_shape))
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        return model


def _net(op: Op, pool: bool = True) -> Callable[[], nn.Module]:
    return lambda: ConstructNet(op, pool)


def _module_net(module: nn.Module) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        net = ConstructNet(lambda n, x: n.act(x))
        net.act = module
        return net
    return build


EXAMPLES: tuple[Example, ...] = (
    Example("F.relu(x), x.relu(), torch.relu(x), nn.ReLU", _net(lambda n, x: torch.relu(x.relu()))),
    Example("torch.clamp(x, 0, 6), F.relu6, nn.ReLU6", _net(lambda n, x: torch.clamp(x, 0, 6))),
    Example("nn.Hardtanh(0, 6)", _module_net(nn.Hardtanh(0.0, 6.0))),
    Example("x + y, torch.add(x, y), out += y, nested adds", _net(lambda n, x: x + n.conv2(x) + x)),
    Example("F.max_pool2d, nn.MaxPool2d", _net(lambda n, x: F.max_pool2d(x, 2))),
    Example("F.avg_pool2d(x, 2), nn.AvgPool2d(2)", _net(lambda n, x: F.avg_pool2d(x, 2))),
    Example("x.mean((2, 3)), F.adaptive_avg_pool2d(x, 1), nn.AdaptiveAvgPool2d(1)",
            _net(lambda n, x: x.mean((2, 3)), pool=False)),
    Example("F.avg_pool2d(x, x.size()[3]): shapes read as constants", _net(lambda n, x: F.avg_pool2d(x, x.size()[3]))),
    Example("x.size() / x.shape without example_input", _net(lambda n, x: F.avg_pool2d(x, x.size()[3])),
            with_shapes=False),
    Example("torch.flatten(x, 1), x.view(x.size(0), -1), nn.Flatten",
            _net(lambda n, x: x.view(x.size(0), -1), pool=False)),
    Example("x.view(-1, 8 * 8 * 8) (LeNet's flatten)", _net(lambda n, x: x.view(-1, 8 * 8 * 8), pool=False)),
    Example("x.view(-1, 8 * 8 * 8) without example_input", _net(lambda n, x: x.view(-1, 8 * 8 * 8), pool=False),
            with_shapes=False),
    Example("F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)) (option-A shortcut)",
            _net(lambda n, x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4), "constant", 0))),
    Example("nn.BatchNorm2d after a conv (folded)", _net(lambda n, x: F.relu(n.bn(n.conv2(x))))),
    Example("nn.BatchNorm2d with no conv before it (a depthwise 1x1 conv)", _net(lambda n, x: n.bn(x))),
    Example("nn.Linear, nn.BatchNorm1d after a Linear (folded), MLP on 2-D inputs", MLPNet, (16,)),
    Example("nn.Dropout, F.dropout, nn.Identity, x.contiguous()",
            _net(lambda n, x: F.dropout(n.act(x.contiguous()), 0.5, False))),
    Example("torch.cat([x, y], 1)", _net(lambda n, x: torch.cat([x, F.relu(n.conv2(x))], 1))),
    Example("nn.Hardswish", _module_net(nn.Hardswish())),
    Example("nn.SiLU, F.silu", _net(lambda n, x: F.silu(x))),
    Example("torch.sigmoid(x) * x (gates)", _net(lambda n, x: torch.sigmoid(x) * x)),
    Example("nn.LeakyReLU, F.leaky_relu", _net(lambda n, x: F.leaky_relu(x, 0.1))),
    Example("nn.Tanh, nn.GELU", _module_net(nn.GELU())),
    Example("torch.clamp(x, -1, 1), nn.Hardtanh(-1, 1)", _net(lambda n, x: torch.clamp(x, -1, 1))),
    Example("F.interpolate, nn.Upsample", _net(lambda n, x: F.interpolate(x, scale_factor=2.0))),
    Example("x * 0.5, x - y", _net(lambda n, x: x * 0.5)),
    Example("nn.LayerNorm, nn.GroupNorm", _module_net(nn.GroupNorm(2, 8))),
    Example("nn.AvgPool2d(3, ceil_mode=True)", _module_net(nn.AvgPool2d(3, ceil_mode=True))),
    Example("F.pad(x, (1, 1, 1, 1)), nn.ZeroPad2d", _net(lambda n, x: F.pad(x, (1, 1, 1, 1)))),
    Example("x[:, :4] (indexing), x.permute", _net(lambda n, x: x[:, :4])),
    Example("nn.Conv2d(padding_mode='reflect')",
            _module_net(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"))),
    Example("nn.Conv1d", lambda: Conv1dNet(), (3, 8)),
)


def first_refusal(example: Example, constructs: Constructs) -> str | None:
    """Why ``constructs``' target refuses ``example`` (the pre-flight check's first refusal, with its fix), or None."""
    model = example.model()
    x = torch.randn(1, *example.input_shape)
    gm: fx.GraphModule = canonicalise(model, x if example.with_shapes else None, fold_batchnorm=False)
    refusals = preflight(gm, constructs)
    return f"{refusals[0].reason} Fix: {refusals[0].fix}" if refusals else None


def construct_table(targets: Sequence[Target]) -> str:
    """The Markdown table of every example: whether each of ``targets`` takes it, and if not why (the reason the
    last target that refuses it gives: list the most specific target first)."""
    lines = [f"| construct | {' | '.join(t.name for t in targets)} | why not, and what works |",
             f"| --- | {' | '.join('---' for _ in targets)} | --- |"]
    for example in EXAMPLES:
        reasons = [first_refusal(example, t.constructs) for t in targets]
        verdicts = " | ".join("no" if r else "yes" for r in reasons)
        lines.append(f"| `{example.spelling}` | {verdicts} | {next((r for r in reversed(reasons) if r), '')} |")
    return "\n".join(lines) + "\n"
