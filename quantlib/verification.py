"""Element-wise comparisons of the stages of a quantised network, layer by layer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.fx as fx


@dataclass(frozen=True)
class LayerComparison:
    """How one layer's values agree between two computations."""

    layer: str
    elements: int
    mismatches: int
    max_abs_diff: float  # in units of the layer's integer grid (LSB)


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, names: set[str]) -> None:
        super().__init__(gm)
        self.names = names
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        if n.name in self.names:
            self.values[n.name] = result.detach()
        return result


def record(gm: fx.GraphModule, x: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The value of every node of ``gm`` named in ``names`` when ``gm`` runs on ``x``."""
    recorder = _Recorder(gm, set(names))
    with torch.no_grad():
        recorder.run(x)
    return recorder.values


def compare(layer: str, expected: torch.Tensor, got: torch.Tensor) -> LayerComparison:
    """Count the elements where ``got`` differs from ``expected`` (both in integer units)."""
    expected, got = expected.double(), torch.as_tensor(got).double()
    if expected.shape != got.shape:
        raise ValueError(f"Layer '{layer}': shapes differ, {tuple(expected.shape)} vs {tuple(got.shape)}.")
    diff = (expected - got).abs()
    return LayerComparison(layer, expected.numel(), int((diff != 0).sum()), float(diff.max()) if diff.numel() else 0.0)


def integer_layers(integer: fx.GraphModule) -> list[str]:
    """The nodes of an integer GraphModule that end a layer: requantisations and linear-op accumulators."""
    from quantlib.modules.true_quant import Requant, TrueConv2d, TrueLinear

    modules = dict(integer.named_modules())
    return [n.name for n in integer.graph.nodes if n.op == "call_module"
            and isinstance(modules[n.target], (Requant, TrueConv2d, TrueLinear))]


def compare_exact_and_integer(exact: fx.GraphModule, integer: fx.GraphModule, x: torch.Tensor
                              ) -> list[LayerComparison]:
    """Per layer, the exact fake-quantised values divided by their scale against the integer model's values."""
    layers = integer_layers(integer)
    exact_values = record(exact, x, layers)
    integer_values = record(integer, x, layers)
    scales = {n.name: n.meta["scale"] for n in exact.graph.nodes if n.name in layers}
    return [compare(name, exact_values[name] / scales[name], integer_values[name]) for name in layers]
