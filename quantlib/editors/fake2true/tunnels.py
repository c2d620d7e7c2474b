"""Scale tunnels: from the exact fake-quantised model (real scales inside every module) to the integer model.

1. ``TunnelInserter``: every Requant and true linear op forgets its scales (they become 1) and is wrapped in
   ``ScaleTunnel(1 / eps_in)`` before and ``ScaleTunnel(eps_out)`` after: the values are unchanged.
2. ``FixedPoint(TunnelSimplifier())``: tunnels in a row merge, tunnels move through ops that commute with scaling
   (max and average pools, flatten, integer adds and concatenations of equally scaled inputs), and tunnels of
   factor 1 vanish. Between two layers the ``eps`` of one meets the ``1 / eps`` of the next, so every tunnel inside the
   network cancels: exactly with power-of-two scales, else to float64 rounding (``UNIT_TOLERANCE``), and the factor is
   then 1 (the two scales are the same number; only its reciprocal was rounded).
3. ``TunnelChecker``: checks that tunnels are left only at the network's boundary (after an input, before an output).
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import Editor
from quantlib.editors.fake2true.scale_propagation import scales_tied
from quantlib.errors import EditorError
from quantlib.graphs.naming import unique_submodule_name
from quantlib.graphs.submodules import delete_unused_submodules
from quantlib.graphs.tracing import same_shape
from quantlib.graphs.value_preserving import SELECTION_MODULES, is_reshape
from quantlib.modules.add import Add
from quantlib.modules.concat import Concat
from quantlib.modules.true_quant import ScaleTunnel, TrueAvgPool2d, TrueQuantModule

UNIT_TOLERANCE = 1e-12
"""How far from 1 a product ``eps * (1 / eps)`` of a scale and its reciprocal may be and still cancel (a few ulps of
float64 for scales that are not powers of two; two distinct float32 scales differ by more than 5e-8)."""

SCALE_COMMUTING_MODULES = (*SELECTION_MODULES, TrueAvgPool2d, nn.ReLU)
"""Ops f with f(a * x) = a * f(x) for a positive per-channel or per-tensor factor a."""


def _tunnel_of(gm: fx.GraphModule, node: fx.Node) -> ScaleTunnel | None:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, ScaleTunnel):
            return module
    return None


def _new_tunnel(gm: fx.GraphModule, factor: torch.Tensor, source: fx.Node) -> fx.Node:
    """A ScaleTunnel node reading ``source``, placed right after it."""
    parent = source.target.rpartition(".")[0] if source.op == "call_module" else ""
    name = unique_submodule_name(gm, parent, "tunnel")
    gm.add_submodule(name, ScaleTunnel(factor))
    with gm.graph.inserting_after(source):
        tunnel = gm.graph.call_module(name, (source,))
    same_shape(tunnel, source)
    return tunnel


def _tunnel_after(gm: fx.GraphModule, node: fx.Node, factor: torch.Tensor) -> None:
    """Every reader of ``node`` reads ``node * factor`` instead."""
    tunnel = _new_tunnel(gm, factor, node)
    node.replace_all_uses_with(tunnel, delete_user_cb=lambda user: user is not tunnel)


def _tunnel_before(gm: fx.GraphModule, node: fx.Node, factor: torch.Tensor) -> None:
    """``node`` reads its first input times ``factor``."""
    source = node.args[0]
    node.replace_input_with(source, _new_tunnel(gm, factor, source))


class TunnelInserter(Editor):
    """Scales leave every integer op for tunnels around it."""

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        for node in list(gm.graph.nodes):
            m = gm.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(m, TrueQuantModule):
                before, after = m.drop_scales()
                _tunnel_before(gm, node, before)
                _tunnel_after(gm, node, after)
        return gm


class TunnelSimplifier(Editor):
    """One sweep over the graph that merges, moves and cancels tunnels; run to a fixed point, no tunnel can be
    simplified further."""

    reports_modified = True

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        changed = False
        for node in list(gm.graph.nodes):
            if node.graph is not gm.graph:  # erased earlier in this sweep
                continue
            changed |= self._simplify(gm, node)
        if changed:
            delete_unused_submodules(gm)
        self.modified = changed
        return gm

    def _simplify(self, gm: fx.GraphModule, node: fx.Node) -> bool:
        tunnel = _tunnel_of(gm, node)
        if tunnel is not None:
            if bool(((tunnel.factor - 1).abs() <= UNIT_TOLERANCE).all()):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
                return True
            tunnel_users = [u for u in node.users if _tunnel_of(gm, u) is not None]
            if not tunnel_users:
                return self._split(gm, node, tunnel)
            for user in tunnel_users:  # merge into every reading tunnel; other readers keep this one
                user_tunnel = _tunnel_of(gm, user)
                user_tunnel.factor = user_tunnel.factor * tunnel.factor
                user.replace_input_with(node, node.args[0])
            if not node.users:
                gm.graph.erase_node(node)
            return True
        return self._move_through(gm, node)

    @staticmethod
    def _split(gm: fx.GraphModule, node: fx.Node, tunnel: ScaleTunnel) -> bool:
        """A tunnel read by several ops becomes one tunnel per reader, so that each can move through its reader."""
        users = list(node.users)
        if len(users) < 2:
            return False
        for user in users[1:]:
            user.replace_input_with(node, _new_tunnel(gm, tunnel.factor.clone(), node.args[0]))
        return True

    @staticmethod
    def _move_through(gm: fx.GraphModule, node: fx.Node) -> bool:
        """``op(tunnel_a(x), ...)`` -> ``tunnel_a(op(x, ...))`` for ops that commute with the factor."""
        inputs = list(dict.fromkeys(a for a in node.args if isinstance(a, fx.Node)))  # x + x reads one tunnel
        if not inputs or any(_tunnel_of(gm, a) is None or len(a.users) != 1 for a in inputs):
            return False
        factors = [_tunnel_of(gm, a).factor for a in inputs]
        per_tensor = all(f.numel() == 1 for f in factors)
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        equal = scales_tied(factors)
        commutes = (isinstance(m, SCALE_COMMUTING_MODULES) and len(inputs) == 1
                    or isinstance(m, Add) and equal
                    or isinstance(m, Concat) and equal and per_tensor
                    or per_tensor and is_reshape(node, {node.target: m}))  # reshapes move channels around
        if not commutes:
            return False
        for a in inputs:
            node.replace_input_with(a, a.args[0])
            gm.graph.erase_node(a)
        _tunnel_after(gm, node, factors[0])
        return True


class TunnelChecker(Editor):
    """Checks that no float scaling is left inside the integer region: tunnels only after inputs, before outputs."""

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        return gm

    def ensures(self, gm: fx.GraphModule) -> None:
        for node in gm.graph.nodes:
            if _tunnel_of(gm, node) is None:
                continue
            at_input = node.args[0].op == "placeholder"
            at_output = all(u.op == "output" for u in node.users)
            if not (at_input or at_output):
                raise EditorError(f"Scale tunnel '{node.name}' (factor {node.meta.get('scale', '')}"
                                  f"{_tunnel_of(gm, node).factor.flatten()[:4].tolist()}) is left inside the integer "
                                  f"region, between '{node.args[0].name}' and {[u.name for u in node.users]}: an op "
                                  f"there does not commute with scaling.")
