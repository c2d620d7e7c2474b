"""Pattern matching on fx graphs, linear in the size of the graph.

- ``SequencePattern``: a chain of roles (``Conv [BN] [ReLU]``) matched greedily along data edges; an optional role is
  taken when the next node fits it and skipped otherwise. No backtracking: each node is tried once as a start and each
  role looks only at the users of the previous match.
- ``OpTreeFinder``: maximal trees of one variadic operation (chains of adds), each inner op used only by its parent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Finder

NodePredicate = Callable[[fx.Node, dict[str, nn.Module]], bool]


@dataclass(frozen=True)
class Role:
    """One position of a sequence pattern: a name, a test on the node, and whether it may be absent."""

    name: str
    matches: NodePredicate
    optional: bool = False


def module_role(name: str, types: type[nn.Module] | tuple[type[nn.Module], ...], optional: bool = False) -> Role:
    """A role filled by a call_module node whose module is an instance of ``types``."""

    def matches(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
        return node.op == "call_module" and isinstance(modules[node.target], types)

    return Role(name, matches, optional)


class SequencePattern:
    """A chain of roles; the first must be required so that every match has one unambiguous start node."""

    def __init__(self, roles: Sequence[Role]) -> None:
        if not roles or roles[0].optional:
            raise ValueError("A SequencePattern needs at least one role and its first role must not be optional.")
        names = [r.name for r in roles]
        if len(set(names)) != len(names):
            raise ValueError(f"Role names must be unique, got {names}.")
        self.roles = tuple(roles)

    def match_at(self, start: fx.Node, modules: dict[str, nn.Module]) -> dict[str, fx.Node] | None:
        """The role -> node map of the match starting at ``start``, or None."""
        if not self.roles[0].matches(start, modules):
            return None
        matched = {self.roles[0].name: start}
        previous = start
        for role in self.roles[1:]:
            hit = next((user for user in previous.users if role.matches(user, modules)), None)
            if hit is not None:
                matched[role.name] = hit
                previous = hit
            elif not role.optional:
                return None
        return matched


class SequenceFinder(Finder):
    """Every match of a SequencePattern, in graph order of the start node."""

    def __init__(self, pattern: SequencePattern) -> None:
        self.pattern = pattern

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        points = []
        for node in gm.graph.nodes:
            roles = self.pattern.match_at(node, modules)
            if roles is not None:
                points.append(ApplicationPoint(nodes=tuple(roles.values()), roles=roles))
        return points


@dataclass(frozen=True, eq=False)
class OpTree(ApplicationPoint):
    """A maximal tree of one operation: ``root`` computes the result of combining ``inputs`` (in argument order)."""

    root: fx.Node | None = None
    inputs: tuple[fx.Node, ...] = ()


class OpTreeFinder(Finder):
    """Maximal trees of nodes satisfying ``is_op`` in which every inner op has its parent as only user; with
    ``merge=False`` every op is a tree of its own (hardware whose op takes two operands)."""

    def __init__(self, is_op: NodePredicate, merge: bool = True) -> None:
        self.is_op = is_op
        self.merge = merge

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())

        def is_inner(node: fx.Node) -> bool:
            """An op whose only use is as one operand of another op of the tree."""
            if not self.merge or not self.is_op(node, modules) or len(node.users) != 1:
                return False
            parent = next(iter(node.users))
            return self.is_op(parent, modules) and list(parent.args).count(node) == 1

        trees = []
        for node in gm.graph.nodes:
            if not self.is_op(node, modules) or is_inner(node):
                continue  # inner nodes are collected from their root
            ops, inputs = [], []
            self._collect(node, is_inner, ops, inputs)
            trees.append(OpTree(nodes=tuple(ops), roles={"root": node}, root=node, inputs=tuple(inputs)))
        return trees

    @staticmethod
    def _collect(root: fx.Node, is_inner: Callable[[fx.Node], bool], ops: list, inputs: list) -> None:
        """Depth-first from ``root``, left to right, without recursion (trees of adds can be deep)."""
        stack: list[tuple[fx.Node, bool]] = [(root, True)]
        while stack:
            node, is_op = stack.pop()
            if not is_op:
                inputs.append(node)
                continue
            ops.append(node)
            for arg in reversed([a for a in node.args if isinstance(a, fx.Node)]):
                stack.append((arg, is_inner(arg)))


class ModuleCallFinder(Finder):
    """Every call of a module of one of ``types`` (only those exact types with ``exact``) for which ``where`` holds,
    each as a one-node application point whose node plays ``role``."""

    def __init__(self, types: tuple[type[nn.Module], ...], role: str, *, exact: bool = False,
                 where: Callable[[fx.Node], bool] | None = None) -> None:
        self.types, self.role, self.exact, self.where = types, role, exact, where

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        points = []
        for node in gm.graph.nodes:
            if node.op != "call_module":
                continue
            module = modules[node.target]
            matches = type(module) in self.types if self.exact else isinstance(module, self.types)
            if matches and (self.where is None or self.where(node)):
                points.append(ApplicationPoint((node,), {self.role: node}))
        return points
