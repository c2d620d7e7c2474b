"""A target is a value: what a back end adds to the generic integer path. The generic editors, the scale
propagation and the ONNX writer take a target's tables as arguments; nothing registers itself at import time.

``INTEGER_ONNX`` is the generic target (standard integer ONNX, power-of-two scales); DIANA's is
``quantlib.backends.diana.target.DIANA``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from quantlib.backends.onnx.integer_export import EMITTERS, Emitter
from quantlib.editors.base import Editor
from quantlib.editors.fake2true import exact_editors
from quantlib.editors.fake2true.scale_propagation import MODULE_RULES, ModuleRule
from quantlib.preflight import GENERIC, Constructs
from quantlib.staging import StageTable


def _none() -> Sequence[Editor]:
    return ()


@dataclass(frozen=True)
class Target:
    """A back end: the constructs it takes (pre-flight), the scale rules and ONNX emitters of every module its graphs
    hold, the editors that integerise its own layers (before the generic linear ops) and finish the exact model,
    for a staged recipe, its stage table, and the kinds of layer its exporter writes."""

    name: str
    constructs: Constructs
    scale_rules: Mapping[type[nn.Module], ModuleRule] = field(default_factory=lambda: MODULE_RULES)
    emitters: Mapping[type[nn.Module], Emitter] = field(default_factory=lambda: EMITTERS)
    layer_integerisers: Callable[[], Sequence[Editor]] = _none
    finishers: Callable[[], Sequence[Editor]] = _none
    stages: StageTable | None = None
    layer_kinds: Sequence[Any] = ()
    """The kinds of hardware layer its integer graphs split into, for a back end that exports per layer (DIANA's
    ``LayerKind`` table)."""

    def exact_editors(self) -> list[Editor]:
        """The pipeline from a fake-quantised model with power-of-two scales to its exact twin, for this target."""
        return exact_editors(self.scale_rules, self.layer_integerisers(), self.finishers())


INTEGER_ONNX = Target("integer ONNX", GENERIC)
"""The generic target: standard integer ONNX (opset 13) that onnxruntime runs."""
