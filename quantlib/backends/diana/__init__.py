"""Everything DIANA-specific: DianaModule (the staged recipe), analog and digital layers, core choice and hardware
rules, DORY / HTVM export with golden activations and the report."""

from quantlib.backends.diana.diana_module import DianaModule, Stage, StageError
from quantlib.backends.diana.target import DIANA, DIANA_STAGES

__all__ = ["DIANA", "DIANA_STAGES", "DianaModule", "Stage", "StageError"]
