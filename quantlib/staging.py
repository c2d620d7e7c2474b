"""Staged recipes as tables. A ``StageTable`` lists, in order, the stages a model reaches; each ``StageRow`` names the
method that reaches it, the editors it runs (in place, on the module's graph, each one's contract checked), whether
it needs data, whether the recipe retrains after it (and under which config key), and what it requires and ensures.
``StagedModule`` runs any such table: the order checks, the next step, the data needs, the rebuild of a saved stage
and the recipe's steps are all read from it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ComposedEditor, Editor
from quantlib.errors import QuantlibError

EditorsOf = Callable[..., Sequence[Editor]]
"""(module, batches, **options) -> the editors a stage runs, in order."""


class StageError(QuantlibError):
    """A stage was called before the stages it builds on, or after the model passed it."""


class Stage(enum.IntEnum):
    """A stage of a table, ordered as the table lists it; ``label`` is its name."""

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class StageRow:
    """One stage: reached by ``method``, which runs ``editors`` (on ``module.gm`` in place, or, with ``builds``, on
    ``source(module)``, the result stored as ``module.<builds>``)."""

    name: str
    method: str
    editors: EditorsOf
    requires: str
    ensures: str
    takes_data: bool = False                      # the method takes batches
    needs_data: bool | Callable[[Any], str | bool] = False  # ... and cannot run without them (why, if a string)
    retrain_key: str | None = None                # the recipe retrains after this stage (config key)
    repeatable: bool = False                      # calling the method again at this stage redoes it
    rebuild: EditorsOf | None = None              # its structural edits, re-run when a saved stage is loaded
    builds: str | None = None
    source: Callable[[Any], fx.GraphModule] | None = None

    def data_needed(self, module: Any) -> str | bool:
        """Whether (and, as a string, why) the stage cannot run on ``module`` without batches."""
        return self.needs_data(module) if callable(self.needs_data) else self.needs_data

    @property
    def wants_data(self) -> bool:
        """Whether the recipe passes its calibration batches (the method may need them)."""
        return self.takes_data and self.needs_data is not False

    @property
    def call(self) -> str:
        """How the method is called: ``calibrate(batches)``, ``integrize()``."""
        return f"{self.method}({'batches' if self.wants_data else ''})"


@dataclass(frozen=True)
class StageTable:
    """The stages of a recipe: ``initial`` (where ``from_fp_model`` leaves a model), then one per row."""

    initial: str
    rows: tuple[StageRow, ...]

    def enum(self) -> type[Stage]:
        """The stages as an ordered enum (``Stage.CALIBRATED < Stage.POW2``)."""
        return Stage("Stage", [n.upper() for n in self.names], start=0)

    @property
    def names(self) -> list[str]:
        return [self.initial, *(r.name for r in self.rows)]

    def row(self, method: str) -> StageRow:
        """The row whose method is ``method``."""
        return next(r for r in self.rows if r.method == method)

    def reaching(self, stage: int) -> StageRow | None:
        """The row that reaches stage number ``stage`` (None for the initial stage)."""
        return self.rows[stage - 1] if stage > 0 else None

    def after(self, stage: int) -> StageRow | None:
        """The row that follows stage number ``stage`` (None after the last)."""
        return self.rows[stage] if stage < len(self.rows) else None


class StagedModule(nn.Module):
    """A model that moves through the stages of ``STAGES`` (a subclass's table); ``self.gm`` is the graph the
    stages edit and ``self.stage`` where it is."""

    STAGES: ClassVar[StageTable]
    Stage: ClassVar[type[Stage]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "STAGES" in cls.__dict__:
            cls.Stage = cls.STAGES.enum()

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm
        self.stage = self.Stage(0)

    def run_stage(self, method: str, batches: Iterable | None = None, **options: Any) -> StagedModule:
        """Reach the stage of ``method``'s row: check the order and the data, run its editors."""
        row = self.STAGES.row(method)
        reached = self.Stage[row.name.upper()]
        if not (self.stage == reached - 1 or row.repeatable and self.stage == reached):
            self.require(reached - 1, method)
        why = row.data_needed(self)
        if batches is None and why:
            raise StageError(f"{method}() needs calibration batches" + (f": {why}." if isinstance(why, str) else "."))
        self._run(row, batches, options)
        self.stage = reached
        return self

    def advance(self, batches: Iterable | None = None, **options: Any) -> Stage:
        """Call the next stage's method (with ``batches`` and ``options`` where it wants data); returns the stage
        reached."""
        row = self.STAGES.after(self.stage)
        if row is None:
            raise StageError(f"The model is at stage '{self.stage.label}', the last one.")
        method = getattr(self, row.method)
        method(batches, **options) if row.wants_data else method()
        return self.stage

    def require(self, stage: int, method: str, *, or_later: bool = False) -> None:
        """StageError unless the model is at ``stage`` (or, with ``or_later``, past it), naming what to call."""
        stage = self.Stage(stage)
        if self.stage == stage or or_later and self.stage > stage:
            return
        if self.stage < stage:
            raise StageError(f"{method}() needs stage '{stage.label}', but the model is at '{self.stage.label}': "
                             f"call {self.STAGES.after(self.stage).call} first.")
        raise StageError(f"{method}() belongs to stage '{stage.label}', which this model has passed (it is at "
                         f"'{self.stage.label}'); build a new {type(self).__name__} to redo it.")

    def rebuild(self, stage: int) -> None:
        """Re-run the structural edits of every stage up to ``stage`` (loading a saved stage's values needs them)."""
        for row in self.STAGES.rows[:stage]:
            if row.rebuild is not None:
                self.gm = ComposedEditor(row.rebuild(self)).run(self.gm)

    def _run(self, row: StageRow, batches: Iterable | None, options: dict[str, Any]) -> None:
        source = self.gm if row.builds is None else row.source(self)
        gm = ComposedEditor(row.editors(self, batches, **options)).run(source)
        if row.builds is None:
            self.gm = gm
        else:
            setattr(self, row.builds, gm)
