import pytest
import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import (
    Annotator,
    ApplicationPoint,
    Applier,
    ComposedEditor,
    Editor,
    Finder,
    FixedPoint,
    Retracer,
    Rewriter,
    RewriteRule,
    check_no_overlap,
)
from quantlib.errors import EditorError
from quantlib.graphs import trace


def _mlp() -> fx.GraphModule:
    return trace(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))


class ReLUFinder(Finder):
    def find(self, gm):
        mods = dict(gm.named_modules())
        return [ApplicationPoint((n,), {"relu": n}) for n in gm.graph.nodes
                if n.op == "call_module" and isinstance(mods[n.target], nn.ReLU)]


class EraseReLU(Applier):
    def apply(self, gm, point):
        node = point["relu"]
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)


def test_editor_never_modifies_its_input():
    gm = _mlp()
    before = [n.name for n in gm.graph.nodes]
    out = Rewriter(RewriteRule("EraseReLU", ReLUFinder(), EraseReLU()))(gm)
    assert [n.name for n in gm.graph.nodes] == before
    assert [n.name for n in out.graph.nodes] == ["input_1", "_0", "_2", "output"]
    assert not hasattr(out, "1")  # the unused ReLU submodule is deleted


def test_failed_editor_leaves_input_intact():
    class Boom(Applier):
        def apply(self, gm, point):
            EraseReLU().apply(gm, point)
            raise RuntimeError("half-way")

    gm = _mlp()
    x = torch.randn(3, 4)
    expected = gm(x)
    with pytest.raises(RuntimeError, match="half-way"):
        Rewriter(RewriteRule("Boom", ReLUFinder(), Boom()))(gm)
    assert torch.equal(gm(x), expected)
    assert len(gm.graph.nodes) == 5


def test_rewriter_ensures_fixed_point():
    with pytest.raises(EditorError, match=r"NoOp left 1 application point\(s\) unrewritten: \(_1\)"):
        Rewriter(RewriteRule("NoOp", ReLUFinder(), _NoOpApplier()))(_mlp())


class _NoOpApplier(Applier):
    def apply(self, gm, point):
        return None


def test_overlapping_points_are_refused_before_any_edit():
    gm = _mlp()
    a, b, c = list(gm.graph.nodes)[1:4]
    with pytest.raises(EditorError, match=r"\(_0, _1\) and \(_1, _2\) overlap at node '_1'"):
        check_no_overlap([ApplicationPoint((a, b)), ApplicationPoint((b, c))])
    check_no_overlap([ApplicationPoint((a,)), ApplicationPoint((b, c))])


def test_requires_failure_names_the_problem():
    class NeedsConv(Editor):
        def requires(self, gm):
            if not any(isinstance(m, nn.Conv2d) for m in gm.modules()):
                raise EditorError("NeedsConv needs a Conv2d")

        def edit(self, gm):
            return gm

    with pytest.raises(EditorError, match="needs a Conv2d"):
        NeedsConv()(_mlp())


def test_composed_editor_runs_in_order_on_one_copy():
    calls = []

    class Record(Editor):
        def __init__(self, tag):
            self.tag = tag

        def edit(self, gm):
            calls.append((self.tag, id(gm)))
            return gm

    gm = _mlp()
    ComposedEditor([Record("a"), Record("b")])(gm)
    assert [t for t, _ in calls] == ["a", "b"]
    assert calls[0][1] == calls[1][1] != id(gm)
    assert repr(ComposedEditor([Record("a")])) == "ComposedEditor([Record])"


def test_annotator_writes_meta_and_refuses_structural_change():
    class Count(Annotator):
        def annotate(self, gm):
            for i, n in enumerate(gm.graph.nodes):
                n.meta["index"] = i

    out = Count()(_mlp())
    assert [n.meta["index"] for n in out.graph.nodes] == [0, 1, 2, 3, 4]

    class Sneaky(Annotator):
        def annotate(self, gm):
            EraseReLU().apply(gm, ReLUFinder().find(gm)[0])

    with pytest.raises(EditorError, match="Sneaky is an Annotator but changed the graph"):
        Sneaky()(_mlp())


def test_retracer_flattens_nested_graph_modules():
    inner = _mlp()
    outer = trace(nn.Sequential(inner, nn.ReLU()), leaf_modules=[fx.GraphModule])
    assert [n.op for n in outer.graph.nodes].count("call_module") == 2
    flat = Retracer()(outer)
    assert [n.op for n in flat.graph.nodes].count("call_module") == 4
    x = torch.randn(2, 4)
    assert torch.equal(flat(x), outer(x))


def test_a_failing_pipeline_names_the_editor_that_failed_and_those_before_it():
    class Fails(Editor):
        def edit(self, gm):
            raise EditorError("no good")

    gm = _mlp()
    with pytest.raises(EditorError, match="^no good") as error:
        ComposedEditor([Rewriter(RewriteRule("EraseReLU", ReLUFinder(), EraseReLU())), Retracer(), Fails()])(gm)
    assert error.value.__notes__ == ["in ComposedEditor: Fails failed (editor 3 of 3); ran before it: EraseReLU, "
                                     "Retracer"]


def test_a_rewriter_says_whether_it_changed_the_graph():
    rewriter = Rewriter(RewriteRule("EraseReLU", ReLUFinder(), EraseReLU()))
    gm = rewriter.run(_mlp())
    assert rewriter.modified is True and "relu" not in gm.code
    rewriter.run(gm)
    assert rewriter.modified is False


class ScaleOutput(Editor):
    """Doubles the output: a graph change that shows in the generated code."""

    def edit(self, gm):
        out = next(iter(gm.graph.find_nodes(op="output")))
        with gm.graph.inserting_before(out):
            doubled = gm.graph.call_function(torch.mul, (out.args[0], 2.0))
        out.args = (doubled,)
        return gm


class RecordForward(Editor):
    runs_forward = True

    def __init__(self, x):
        self.x, self.seen = x, None

    def edit(self, gm):
        self.seen = gm(self.x)
        return gm


def test_a_pipeline_generates_code_once_at_its_end_and_before_an_editor_that_runs_the_module(monkeypatch):
    gm, x = _mlp(), torch.randn(3, 4)
    expected = gm(x)
    compiled = []
    original = fx.GraphModule.recompile
    monkeypatch.setattr(fx.GraphModule, "recompile", lambda self: (compiled.append(1), original(self))[1])
    recorder = RecordForward(x)
    out = ComposedEditor([ScaleOutput(), ScaleOutput(), recorder, ScaleOutput(), ScaleOutput()]).run(gm)
    assert len(compiled) == 2  # before the recorder, and once at the end
    assert torch.equal(recorder.seen, expected * 4) and torch.equal(out(x), expected * 16)
    compiled.clear()
    ComposedEditor([RecordForward(x)]).run(out)
    assert compiled == []  # nothing changed: no code generated


class DropOneReLU(Editor):
    """Erases the first ReLU it finds: one per round, so a fixed point needs as many rounds as there are ReLUs."""

    reports_modified = True

    def edit(self, gm):
        points = ReLUFinder().find(gm)
        if points:
            EraseReLU().apply(gm, points[0])
        self.modified = bool(points)
        return gm


def test_a_fixed_point_runs_its_editor_until_it_changes_nothing():
    gm = trace(nn.Sequential(nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.ReLU()))
    out = FixedPoint(DropOneReLU()).run(gm)
    assert [n.op for n in out.graph.nodes] == ["placeholder", "call_module", "output"]
    x = torch.randn(2, 4)
    assert torch.equal(out(x), out.get_submodule("1")(x))


def test_a_fixed_point_that_does_not_converge_is_an_error_naming_the_editor():
    class Forever(Editor):
        reports_modified = True

        def edit(self, gm):
            self.modified = True
            return gm

    with pytest.raises(EditorError, match=r"Forever still changed the graph after 5 rounds"):
        FixedPoint(Forever(), max_rounds=5).run(_mlp())


def test_a_fixed_point_refuses_an_editor_that_does_not_report_its_changes():
    with pytest.raises(EditorError, match=r"FixedPoint needs ScaleOutput to report whether it modified the graph"):
        FixedPoint(ScaleOutput())
