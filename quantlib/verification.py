"""Element-wise comparisons of the stages of a quantised network, layer by layer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.fx as fx

from quantlib.editors.base import Editor
from quantlib.errors import QuantlibError
from quantlib.modules.true_quant import Requant, TrueQuantModule

CHUNK = 16
"""Inputs per batch when comparing whole networks layer by layer (memory grows with it)."""


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


def merge(a: LayerComparison, b: LayerComparison) -> LayerComparison:
    """The comparison of one layer over two batches."""
    return LayerComparison(a.layer, a.elements + b.elements, a.mismatches + b.mismatches,
                           max(a.max_abs_diff, b.max_abs_diff))


def compare_in_chunks(compare_batch: Callable[[torch.Tensor], list[LayerComparison]], x: torch.Tensor,
                      chunk: int = CHUNK) -> list[LayerComparison]:
    """``compare_batch`` over ``x`` in chunks of ``chunk`` inputs (bounded memory), merged layer by layer."""
    total: list[LayerComparison] | None = None
    for part in x.split(chunk):
        result = compare_batch(part)
        total = result if total is None else [merge(a, b) for a, b in zip(total, result, strict=True)]
    return total or []


def integer_layers(integer: fx.GraphModule) -> list[str]:
    """The nodes of an integer GraphModule that end a layer: requantisations and linear-op accumulators."""
    modules = dict(integer.named_modules())
    return [n.name for n in integer.graph.nodes if n.op == "call_module"
            and isinstance(modules[n.target], TrueQuantModule)]


def compare_fake_and_exact(fake: fx.GraphModule, exact: fx.GraphModule, x: torch.Tensor) -> list[LayerComparison]:
    """Per layer the fake-quantised model's quantiser outputs against the exact model's requantisations (same node
    names, or the fake node a requantisation names in ``meta['fake_node']``: an add's output, an average pool), in
    units of the layer's scale (values / scale rounded: with scales that are not powers of two the float quotient of
    an integer multiple is an integer only to rounding)."""
    modules = dict(exact.named_modules())
    requants = {n.meta.get("fake_node", n.name): (n.name, n.meta["scale"]) for n in exact.graph.nodes
                if n.op == "call_module" and isinstance(modules[n.target], Requant)}
    layers = [n.name for n in fake.graph.nodes if n.name in requants]

    def compare_batch(part: torch.Tensor) -> list[LayerComparison]:
        fake_values = record(fake, part, layers)
        exact_values = record(exact, part, [requants[name][0] for name in layers])
        comparisons = []
        for name in layers:
            exact_name, scale = requants[name]
            expected = exact_values[exact_name]
            comparisons.append(compare(name, torch.round(fake_values[name].reshape(expected.shape).double() / scale),
                                       torch.round(expected / scale)))
        return comparisons

    return compare_in_chunks(compare_batch, x)


def compare_exact_and_integer(exact: fx.GraphModule, integer: fx.GraphModule, x: torch.Tensor
                              ) -> list[LayerComparison]:
    """Per layer, the exact fake-quantised values divided by their scale (rounded: with scales that are not powers of
    two the quotient is an integer only to float64 rounding) against the integer model's values."""
    layers = integer_layers(integer)
    scales = {n.name: n.meta["scale"] for n in exact.graph.nodes if n.name in layers}

    def compare_batch(part: torch.Tensor) -> list[LayerComparison]:
        exact_values = record(exact, part, layers)
        integer_values = record(integer, part, layers)
        return [compare(name, torch.round(exact_values[name] / scales[name]), integer_values[name]) for name in layers]

    return compare_in_chunks(compare_batch, x)


class FakeEqualsExact(Editor):
    """A check as a pipeline step: on ``inputs`` (eval mode, so no training-time noise) the fake-quantised graph
    equals its exact twin ``exact(gm)`` element for element at every layer; QuantlibError names the layers that
    differ."""

    def __init__(self, inputs: torch.Tensor, exact: Callable[[fx.GraphModule], fx.GraphModule]) -> None:
        self.inputs, self.exact = inputs, exact

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        return gm

    def ensures(self, gm: fx.GraphModule) -> None:
        was_training = gm.training
        gm.eval()
        try:
            differing = [c for c in compare_fake_and_exact(gm, self.exact(gm), self.inputs) if c.mismatches]
        finally:
            gm.train(was_training)
        if differing:
            raise QuantlibError("The fake-quantised model differs from the integer arithmetic at "
                                + ", ".join(f"'{c.layer}' ({c.mismatches} of {c.elements})" for c in differing)
                                + ". Please report this with the model.")
