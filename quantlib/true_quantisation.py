"""The generic power-of-two path from a float model to an integer one, for back ends without their own recipe:
quantise -> calibrate -> scales to powers of two -> exact fake-quantised model -> integer model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from quantlib.calibration import calibrate
from quantlib.editors.fake2true import integerise, to_exact
from quantlib.fake_quantisation import QuantisationSpec, quantize
from quantlib.scales import clip_scales_pow2, quantise_biases


@dataclass(frozen=True)
class IntegerFlow:
    """The three models of the power-of-two path; ``exact`` and ``integer`` agree element for element."""

    fake: fx.GraphModule     # fake-quantised, power-of-two scales, biases on their grids (what QAT trains)
    exact: fx.GraphModule    # requantisations in place: computes scale * (what ``integer`` computes)
    integer: fx.GraphModule  # real input -> integers -> real output


def pow2_integer_flow(model: nn.Module, example_input: torch.Tensor, calibration: Iterable,
                      spec: dict[str, Any] | QuantisationSpec | None = None) -> IntegerFlow:
    """Quantise ``model`` per ``spec``, calibrate on ``calibration``, map every scale to a power of two, and build
    the exact fake-quantised and integer models. ``model`` is left untouched."""
    fake = clip_scales_pow2(calibrate(quantize(model, example_input, spec), calibration))
    quantise_biases(fake, example_input)
    exact = to_exact(fake, example_input)
    return IntegerFlow(fake, exact, integerise(exact))
