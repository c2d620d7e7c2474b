"""Quantisers as autograd functions with straight-through or paper-specific backward passes, plus pow2 helpers."""

from quantlib.quantizers.dorefa import dorefa_activations, dorefa_weights
from quantlib.quantizers.lsq import lsq_binary, lsq_grad_scale, lsq_initial_step, lsq_quantize, lsq_signed
from quantlib.quantizers.pact import pact_quantize
from quantlib.quantizers.pow2 import exact_log2, pow2_ceil, pow2_round
from quantlib.quantizers.ternary_binary import binary_quantize, ternary_quantize
from quantlib.quantizers.tqt import tqt_quantize
from quantlib.quantizers.uniform import floor_quantize, round_quantize

__all__ = ["binary_quantize", "dorefa_activations", "dorefa_weights", "exact_log2", "floor_quantize", "lsq_binary",
           "lsq_grad_scale", "lsq_initial_step", "lsq_quantize", "lsq_signed", "pact_quantize", "pow2_ceil",
           "pow2_round", "round_quantize", "ternary_quantize", "tqt_quantize"]
