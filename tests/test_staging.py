"""A staged recipe is a table: StagedModule runs any table, with order checks, data needs and rebuilds read from it."""

import pytest
import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import Editor
from quantlib.graphs import trace
from quantlib.staging import StagedModule, StageError, StageRow, StageTable


class Scale(Editor):
    """Multiplies the first layer's weight by ``factor`` (in place), counting its runs."""

    runs = 0

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        with torch.no_grad():
            gm.get_submodule("0").weight.mul_(self.factor)
        Scale.runs += 1
        return gm


TABLE = StageTable("fresh", (
    StageRow("doubled", "double", lambda m, batches: [Scale(2.0)], requires="a fresh model", ensures="weights x2",
             repeatable=True, rebuild=lambda m: [Scale(1.0)]),
    StageRow("fitted", "fit_to", lambda m, batches: [Scale(float(len(batches)))], requires="doubled weights",
             ensures="weights x len(batches)", takes_data=True, needs_data=lambda m: "the data sets the factor"),
))


class Toy(StagedModule):
    STAGES = TABLE

    def double(self):
        return self.run_stage("double")

    def fit_to(self, batches):
        return self.run_stage("fit_to", batches)


def _toy() -> Toy:
    torch.manual_seed(0)
    return Toy(trace(nn.Sequential(nn.Linear(2, 2))))


def test_the_table_gives_the_stages_their_order_and_names():
    assert [s.label for s in Toy.Stage] == ["fresh", "doubled", "fitted"]
    assert Toy.Stage.FRESH < Toy.Stage.DOUBLED < Toy.Stage.FITTED
    assert [row.call for row in TABLE.rows] == ["double()", "fit_to(batches)"]


def test_stages_run_their_editors_in_order_and_check_the_order_and_the_data():
    toy = _toy()
    w = toy.gm.get_submodule("0").weight.detach().clone()
    with pytest.raises(StageError, match=r"^fit_to\(\) needs stage 'doubled', but the model is at 'fresh': call "
                                         r"double\(\) first\.$"):
        toy.fit_to([1, 2, 3])
    toy.double().double()  # repeatable
    with pytest.raises(StageError, match=r"^fit_to\(\) needs calibration batches: the data sets the factor\.$"):
        toy.fit_to(None)
    assert toy.advance([1, 2, 3]) is Toy.Stage.FITTED
    assert torch.equal(toy.gm.get_submodule("0").weight, w * 12)
    with pytest.raises(StageError, match=r"^double\(\) belongs to stage 'fresh', which this model has passed"):
        toy.double()
    with pytest.raises(StageError, match="at stage 'fitted', the last one"):
        toy.advance()


def test_rebuild_reruns_only_the_structural_edits_up_to_a_stage():
    toy = _toy()
    Scale.runs = 0
    toy.rebuild(Toy.Stage.FITTED)
    assert Scale.runs == 1 and toy.stage is Toy.Stage.FRESH
