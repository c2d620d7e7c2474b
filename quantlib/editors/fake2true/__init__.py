"""Fake-quantised to true-quantised: scales propagated through the graph, linear ops with integer weights, one
requantisation after every layer, then the scales moved out of the network so that it computes on integers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import ComposedEditor, Editor, FixedPoint, Rewriter
from quantlib.editors.fake2true.average_pool_integeriser import AVERAGE_POOL_INTEGERISER
from quantlib.editors.fake2true.linear_op_integeriser import LINEAR_OP_INTEGERISER
from quantlib.editors.fake2true.requantiser import ADD_SPLITTER, IDENTITY_REQUANT_REMOVER, REQUANTISER
from quantlib.editors.fake2true.scale_propagation import MODULE_RULES, ModuleRule, ScalePropagator
from quantlib.editors.fake2true.tunnels import TunnelChecker, TunnelInserter, TunnelSimplifier
from quantlib.errors import UnsupportedOpError
from quantlib.graphs.graph_copy import graph_copy
from quantlib.graphs.tracing import ensure_shapes
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qmodule import QModule


def exact_editors(scale_rules: Mapping[type[nn.Module], ModuleRule] = MODULE_RULES,
                  layer_integerisers: Sequence[Editor] = (), finishers: Sequence[Editor] = ()) -> list[Editor]:
    """Fake-quantised (power-of-two scales) -> exact fake-quantised: requantisations in place, integer weights. A
    target's own layers are integerised by ``layer_integerisers`` before the generic linear ops, and ``finishers``
    run last."""
    return [
        ScalePropagator(scale_rules),        # node.meta['scale'] everywhere
        *layer_integerisers,
        Rewriter(LINEAR_OP_INTEGERISER),     # integer weights, bias on the accumulator grid
        Rewriter(ADD_SPLITTER),              # requantised inputs, integer add, requantised output
        Rewriter(REQUANTISER),               # every activation quantiser becomes clip(floor((x * mul + add) / 2^shift))
        Rewriter(AVERAGE_POOL_INTEGERISER),  # exact sum / (kh * kw), floored by a requant on the input's grid
        Rewriter(IDENTITY_REQUANT_REMOVER),  # an add input already on the add's grid is read as it is
        *finishers,
    ]


def integer_editors() -> list[Editor]:
    """Exact fake-quantised -> integer: scales leave the network through tunnels that cancel inside it."""
    return [TunnelInserter(), FixedPoint(TunnelSimplifier()), TunnelChecker()]


def to_exact(gm: fx.GraphModule, example_input: torch.Tensor | tuple[torch.Tensor, ...],
             editors: list[Editor] | None = None) -> fx.GraphModule:
    """The exact fake-quantised twin of a calibrated fake-quantised ``gm`` whose scales are powers of two.

    ``editors`` replaces ``exact_editors()`` for a target with quantised modules of its own
    (``target.exact_editors()``)."""
    gm = graph_copy(gm)  # the exact editors replace modules, never change them: ``gm`` stays untouched
    ensure_shapes(gm, example_input)
    exact = ComposedEditor(exact_editors() if editors is None else editors).run(gm)
    left = [f"{n.name} ({type(exact.get_submodule(n.target)).__name__})" for n in exact.graph.nodes
            if n.op == "call_module" and isinstance(exact.get_submodule(n.target), (QModule, QHarmonisedAdd))]
    if left:
        raise UnsupportedOpError(f"No editor turned these fake-quantised modules into integer ops: {', '.join(left)}. "
                                 f"A target with modules of its own passes its editors: to_exact(gm, x, "
                                 f"target.exact_editors()).")
    return exact


def integerise(exact: fx.GraphModule) -> fx.GraphModule:
    """The integer GraphModule of an exact fake-quantised model: real input -> integers -> real output."""
    return ComposedEditor(integer_editors())(exact)


__all__ = ["exact_editors", "integer_editors", "integerise", "to_exact"]
