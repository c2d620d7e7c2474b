"""Fake-quantised to true-quantised: scales propagated through the graph, linear ops with integer weights, one
requantisation after every layer, then the scales moved out of the network so that it computes on integers."""

from __future__ import annotations

import torch
import torch.fx as fx

from quantlib.editors.base import ComposedEditor, Editor
from quantlib.editors.fake2true.linear_op_integeriser import LinearOpIntegeriser
from quantlib.editors.fake2true.requantiser import AddSplitter, Requantiser
from quantlib.editors.fake2true.scale_propagation import ScalePropagator
from quantlib.editors.fake2true.sum_pool import AvgPoolToSumPool
from quantlib.editors.fake2true.tunnels import TunnelChecker, TunnelInserter, TunnelSimplifier
from quantlib.graphs.tracing import annotate_shapes


def exact_editors() -> list[Editor]:
    """Fake-quantised (power-of-two scales) -> exact fake-quantised: requantisations in place, integer weights."""
    return [
        ScalePropagator(),       # node.meta['scale'] everywhere
        AvgPoolToSumPool(),      # integers sum exactly; the division moves into the next requant
        LinearOpIntegeriser(),   # integer weights, bias on the accumulator grid
        AddSplitter(),           # requantised inputs, integer add, requantised output
        Requantiser(),           # every activation quantiser becomes clip(floor((x * mul + add) / 2^shift))
    ]


def integer_editors() -> list[Editor]:
    """Exact fake-quantised -> integer: scales leave the network through tunnels that cancel inside it."""
    return [TunnelInserter(), TunnelSimplifier(), TunnelChecker()]


def to_exact(gm: fx.GraphModule, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """The exact fake-quantised twin of a calibrated fake-quantised ``gm`` whose scales are powers of two."""
    gm = ComposedEditor([])(gm)  # a copy that carries shapes; ``gm`` stays untouched
    annotate_shapes(gm, example_input)
    return ComposedEditor(exact_editors())(gm)


def integerise(exact: fx.GraphModule) -> fx.GraphModule:
    """The integer GraphModule of an exact fake-quantised model: real input -> integers -> real output."""
    return ComposedEditor(integer_editors())(exact)


__all__ = ["exact_editors", "integer_editors", "integerise", "to_exact"]
