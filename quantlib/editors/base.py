"""The editing framework: every transformation of a model is an Editor on a torch.fx GraphModule.

Contracts (see docs/architecture.md):
- ``editor(gm)`` never modifies ``gm``: it edits a deep copy, so a failing editor leaves the caller's model intact;
- ``requires`` / ``ensures`` state the pre- and postconditions and raise EditorError naming the node that breaks them;
- after every editor that changed the graph it lints, and the module recompiles (a pipeline recompiles once, at its
  end, and before any editor that ``runs_forward``);
- a rewrite is data, a RewriteRule: a read-only Finder plus an Applier that edits one ApplicationPoint; the Rewriter
  runs one, refusing overlapping points before anything is applied;
- a ComposedEditor is a plain list of editors run in order; a FixedPoint runs one editor until it changes nothing.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch.fx as fx

from quantlib.errors import EditorError
from quantlib.graphs.submodules import delete_unused_submodules
from quantlib.graphs.tracing import trace


def _code_key(gm: fx.GraphModule) -> list[tuple]:
    """What a GraphModule's generated code depends on: every node's name, kind, target, arguments and type."""
    return [(n.name, n.op, n.target, n.args, n.kwargs, n.type) for n in gm.graph.nodes]


def _same(a: list[tuple], b: list[tuple]) -> bool:
    """Whether two code keys are equal (an argument that cannot be compared counts as changed)."""
    try:
        return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))
    except (RuntimeError, TypeError, ValueError):
        return False


class Editor(ABC):
    """Takes a GraphModule and returns a GraphModule that satisfies ``ensures``."""

    def requires(self, gm: fx.GraphModule) -> None:
        """Raise EditorError if ``gm`` is not a valid input for this editor."""

    def ensures(self, gm: fx.GraphModule) -> None:
        """Raise EditorError if the edited ``gm`` does not have the properties this editor promises."""

    @abstractmethod
    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        """Edit ``gm`` in place (or build a new one) and return the result; called by ``run``."""

    reports_modified: bool = False
    """Whether ``edit`` sets ``modified`` (a Rewriter knows whether it applied points); otherwise ``run`` compares
    the generated code's inputs before and after."""

    modified: bool | None = None
    """Set by ``edit`` of an editor that ``reports_modified``: whether it changed the graph it returns."""

    runs_forward: bool = False
    """Whether ``edit`` calls the module (its generated code, not an Interpreter over the graph), so that the code
    must be current before it runs."""

    changed: bool = False
    """Set by ``run``: whether ``gm``'s graph changed, so that its code is to be generated again."""

    def run(self, gm: fx.GraphModule, recompile: bool = True) -> fx.GraphModule:
        """Check the precondition, edit ``gm`` in place, lint and (unless a pipeline does it later) recompile when
        the graph changed, check the postcondition."""
        self.requires(gm)
        self.modified = None
        before = None if self.reports_modified else _code_key(gm)
        out = self.edit(gm)
        if self.reports_modified:
            self.changed = self.modified is not False
        else:  # a new GraphModule comes with its code
            self.changed = out is gm and not _same(before, _code_key(out))
        if self.changed or out is not gm:
            out.graph.lint()
        if self.changed and recompile:
            out.recompile()
        self.ensures(out)
        return out

    def __call__(self, gm: fx.GraphModule) -> fx.GraphModule:
        return self.run(copy.deepcopy(gm))

    def __repr__(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, eq=False)
class ApplicationPoint:
    """One place where an Applier will edit the graph: the nodes it touches, and the role each plays."""

    nodes: tuple[fx.Node, ...]
    roles: dict[str, fx.Node] = field(default_factory=dict)

    def __getitem__(self, role: str) -> fx.Node:
        return self.roles[role]

    def get(self, role: str) -> fx.Node | None:
        return self.roles.get(role)

    def describe(self) -> str:
        return "(" + ", ".join(n.name for n in self.nodes) + ")"


class Finder(ABC):
    """Returns the application points of a graph; never edits it."""

    @abstractmethod
    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        """All application points of ``gm``, in graph order."""


class Applier(ABC):
    """Edits the graph at one application point; never searches."""

    @abstractmethod
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        """Rewrite ``gm`` in place at ``point``."""


def check_no_overlap(points: Sequence[ApplicationPoint]) -> None:
    """Raise EditorError if two application points share a node (editing one would invalidate the other)."""
    owner: dict[fx.Node, ApplicationPoint] = {}
    for point in points:
        for node in point.nodes:
            if node in owner:
                raise EditorError(f"Application points {owner[node].describe()} and {point.describe()} overlap at "
                                  f"node '{node.name}'; the finder must return disjoint points.")
            owner[node] = point


@dataclass(frozen=True)
class RewriteRule:
    """A rewrite as data: the points ``finder`` finds, each edited by ``applier``; ``name`` names it in errors."""

    name: str
    finder: Finder
    applier: Applier


class Rewriter(Editor):
    """Runs a RewriteRule: find every point first, check they are disjoint, then apply each.

    ``ensures`` checks that the rewrite reached its fixed point: the finder finds nothing left in the edited graph.
    """

    reports_modified = True

    def __init__(self, rule: RewriteRule) -> None:
        self.rule = rule
        self.finder, self.applier = rule.finder, rule.applier

    def __repr__(self) -> str:
        return self.rule.name

    def ensures(self, gm: fx.GraphModule) -> None:
        left = self.finder.find(gm)
        if left:
            raise EditorError(f"{self!r} left {len(left)} application point(s) unrewritten: "
                              f"{', '.join(p.describe() for p in left[:5])}.")

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        points = self.finder.find(gm)
        check_no_overlap(points)
        for point in points:
            self.applier.apply(gm, point)
        if points:
            delete_unused_submodules(gm)
        self.modified = bool(points)
        return gm


class ComposedEditor(Editor):
    """A pipeline: a plain list of editors applied in order, on one copy of the input."""

    reports_modified = True

    def __init__(self, editors: Sequence[Editor]) -> None:
        self.editors = list(editors)

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        """Run each editor in turn, generating code only before an editor that runs the module (``run``
        generates it at the end); a failure is annotated with the editor that failed and those that ran before."""
        stale = False  # the graph changed since its code was generated
        for i, editor in enumerate(self.editors):
            try:
                if stale and editor.runs_forward:
                    gm.recompile()
                    stale = False
                out = editor.run(gm, recompile=False)
            except Exception as exc:
                ran = ", ".join(map(repr, self.editors[:i])) or "none"
                exc.add_note(f"in {type(self).__name__}: {editor!r} failed (editor {i + 1} of {len(self.editors)}); "
                             f"ran before it: {ran}")
                raise
            stale = editor.changed or stale and out is gm  # a new GraphModule comes with its code
            gm = out
        self.modified = stale
        return gm

    def __repr__(self) -> str:
        return f"{type(self).__name__}([{', '.join(map(repr, self.editors))}])"


class FixedPoint(Editor):
    """Runs ``editor`` again until it changes nothing (rewrites that each shorten a chain, simplifications that
    enable others); ``editor`` reports ``modified``. Refuses to loop more than ``max_rounds`` times."""

    reports_modified = True

    def __init__(self, editor: Editor, max_rounds: int = 10_000) -> None:
        if not editor.reports_modified:
            raise EditorError(f"FixedPoint needs {editor!r} to report whether it modified the graph "
                              f"(reports_modified, and modified set by its edit).")
        self.editor, self.max_rounds = editor, max_rounds

    def requires(self, gm: fx.GraphModule) -> None:
        self.editor.requires(gm)

    def ensures(self, gm: fx.GraphModule) -> None:
        self.editor.ensures(gm)

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        modified = False
        for _ in range(self.max_rounds):
            self.editor.modified = None
            gm = self.editor.edit(gm)
            if self.editor.modified is None:
                raise EditorError(f"{self.editor!r} reports_modified but did not set modified.")
            if not self.editor.modified:
                self.modified = modified
                return gm
            modified = True
        raise EditorError(f"{self.editor!r} still changed the graph after {self.max_rounds} rounds; its rewrites "
                          f"do not converge.")

    def __repr__(self) -> str:
        return f"FixedPoint({self.editor!r})"


class Annotator(Editor):
    """An editor that only writes ``node.meta``; the graph's nodes and edges stay as they were (checked)."""

    @abstractmethod
    def annotate(self, gm: fx.GraphModule) -> None:
        """Write annotations into ``node.meta`` of ``gm``'s nodes."""

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        before = _structure(gm)
        self.annotate(gm)
        if _structure(gm) != before:
            raise EditorError(f"{self!r} is an Annotator but changed the graph's structure.")
        return gm


def _structure(gm: fx.GraphModule) -> list[tuple[str, str, str, tuple[str, ...]]]:
    return [(n.name, n.op, str(n.target), tuple(a.name for a in n.all_input_nodes)) for n in gm.graph.nodes]


class Retracer(Editor):
    """Traces the GraphModule again with quantlib's tracer, flattening anything an earlier edit left nested."""

    runs_forward = True  # tracing calls the module's forward

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        return trace(gm)
