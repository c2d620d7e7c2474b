"""Joint mixed-precision training: switchable bit-widths per layer (DoReFa / PACT), trained for many configurations
at once and validated over random ones (docs/mixed-precision.md)."""

from quantlib.mixed_precision.configurations import (
    apply_bitwidth_config,
    bitwidth_config,
    set_bitwidth,
    set_random_bitwidths,
    set_uniform_bitwidth,
    switchable_layers,
)
from quantlib.mixed_precision.conversion import BATCHNORM_MODES, switchable
from quantlib.mixed_precision.training_methods import (
    TRAINING_METHODS,
    MultiPass,
    joint_quantization,
    recursive_distillation,
    single_precision,
)
from quantlib.mixed_precision.validation import (
    VALIDATION_FUNCTIONS,
    random_bitwidths,
    recalibrate_batchnorm,
    simple_validation,
    uniform_table,
)

__all__ = ["BATCHNORM_MODES", "TRAINING_METHODS", "VALIDATION_FUNCTIONS", "MultiPass", "apply_bitwidth_config",
           "bitwidth_config", "joint_quantization", "random_bitwidths", "recalibrate_batchnorm",
           "recursive_distillation", "set_bitwidth", "set_random_bitwidths", "set_uniform_bitwidth",
           "simple_validation", "single_precision", "switchable", "switchable_layers", "uniform_table"]
