"""Round to nearest: every weight rounded to its nearest level, every range from min-max, a percentile or the
MSE-optimal clip of the calibration data (the baseline every other method is measured against)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from quantlib.ptq.method import PTQMethod
from quantlib.ptq.options import PTQOptions
from quantlib.ptq.scope import Scope
from quantlib.specs import QHParamsInitStrategy

RANGES = ("minmax", "percentile", "mse")


@dataclass(frozen=True)
class RTNParams:
    """``ranges``: 'minmax', 'percentile' or 'mse'; ``percentile``: the upper percentile (%) for 'percentile'."""

    ranges: str = "minmax"
    percentile: float = 99.99

    def check(self) -> str | None:
        if self.ranges not in RANGES:
            return f"ranges={self.ranges!r} is not one of {RANGES}."
        if not 50.0 < self.percentile <= 100.0:
            return f"percentile={self.percentile} must be in (50, 100]."
        return None


class RTN(PTQMethod):
    """Round to nearest on calibrated ranges."""

    name = "rtn"
    Params = RTNParams

    def initial_ranges(self) -> QHParamsInitStrategy:
        if self.params.ranges == "percentile":
            return QHParamsInitStrategy.from_spec(("percentile", {"q": self.params.percentile}))
        return QHParamsInitStrategy(self.params.ranges)

    def refine(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        """Nothing beyond calibration: the weights' round qop rounds to nearest."""
