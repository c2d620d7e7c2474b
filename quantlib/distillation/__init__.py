"""Knowledge distillation across bit-widths: quantised pre-activation ResNets from a (w_bits, a_bits, method) spec,
Hinton's distillation loss, and a look at the levels each layer takes."""

from quantlib.distillation.levels import LayerLevels, record_levels
from quantlib.distillation.quantised_models import QuantSpec, quantised_preact_resnet
from quantlib.training import DistillationLoss

__all__ = ["DistillationLoss", "LayerLevels", "QuantSpec", "quantised_preact_resnet", "record_levels"]
