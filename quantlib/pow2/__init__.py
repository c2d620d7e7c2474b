"""Power-of-two symmetric quantisation as a three-step pipeline (docs/pow2.md): PTQ of weights and biases,
weight-only QAT with float activations, final PTQ of inputs and outputs; every scale 2^-k, so every rescale of the
integer model is a shift. ``run_pipeline(config)`` returns the report ``{"final_quantization_details": {"features.0.
weight": {"scale": 0.001953125, "power_of_2": "2^(-9)", "hardware_op": "x >> 9", ...}}, ...}``."""

from __future__ import annotations

from quantlib.pow2.aimet import aimet_encodings
from quantlib.pow2.config import Pow2Config, TensorQuantisation, load_config
from quantlib.pow2.pipeline import Pow2Run, run, run_pipeline, verify_deployment, write_outputs
from quantlib.pow2.stages import POW2_STAGES, Pow2Model

__all__ = ["POW2_STAGES", "Pow2Config", "Pow2Model", "Pow2Run", "TensorQuantisation", "aimet_encodings",
           "load_config", "run", "run_pipeline", "verify_deployment", "write_outputs"]
