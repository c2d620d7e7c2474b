"""One call that runs a float model through the whole DIANA flow and counts, at every layer, where the four readings
of the network disagree: the hardware-mapped fake-quantised model, the exact model, the integer model, onnxruntime on
the exported twin, and the DORY file itself (dory_interpreter). Used by the random-net property test and benchmark."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from quantlib.backends.diana.core_choice import AnalogPolicy
from quantlib.backends.diana.diana_module import DianaModule
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact


@dataclass(frozen=True)
class Fidelity:
    """Per comparison, the elements that differ (summed over layers); the hardware-rule errors of the report."""

    cores: dict[str, str]
    hardware_layers: int
    elements: int
    mismatches: dict[str, int]
    errors: list[str]

    @property
    def exact(self) -> bool:
        return not any(self.mismatches.values())


def diana_fidelity(model: nn.Module, calibration: list[torch.Tensor], x: torch.Tensor, analog: AnalogPolicy,
                   out_dir: str | os.PathLike) -> Fidelity:
    """The DIANA flow of ``model`` (calibrated on ``calibration``, exported into ``out_dir``) checked on ``x``."""
    dm = DianaModule.from_fp_model(model, calibration[0][:1], analog=analog)
    dm.calibrate(calibration).map_scales(calibration).clip_scales_pow2().map_to_hw()
    fake, exact = dm.gm.eval(), dm.exact_model()
    fake_vs_exact = compare_fake_and_exact(fake, exact, x)
    dm.integrize()
    exact_vs_integer = compare_exact_and_integer(exact, dm.integer, x)
    result = dm.export(out_dir, "net", verify_on=x)
    return Fidelity(
        cores=dm.cores, hardware_layers=len(result.comparisons), elements=sum(c.elements for c in result.comparisons),
        mismatches={"fake_vs_exact": sum(c.mismatches for c in fake_vs_exact),
                    "exact_vs_integer": sum(c.mismatches for c in exact_vs_integer),
                    "integer_vs_twin": sum(c.mismatches for c in result.comparisons),
                    "integer_vs_dory": sum(c.mismatches for c in result.dory_comparisons)},
        errors=result.errors)
