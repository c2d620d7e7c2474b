"""Quantised pre-activation CIFAR ResNets from a ``(w_bits, a_bits, method)`` spec, built from quantlib's
switchable-precision layers at one fixed bit-width each: every conv's weights at ``w_bits``, every BN-ReLU followed
by an activation quantiser at ``a_bits``; the first conv and the classifier full precision unless
``quantise_first_last``. The method: ``dorefa`` (DoReFa weights, activations clamped to [0, 1]), ``pact`` (DoReFa
weights, PACT's learned clip) or ``lsq`` (learned step sizes for weights and activations). 32 bits is full
precision; 1..16 quantise.

The residual stream (the sums of the adds) is ``residual="float"`` by default, as in DoReFa-style quantised ResNets:
what a block adds to it is its last conv's output, computed from quantised weights and activations, and every conv
reads it through a BN-ReLU-quantiser. ``residual="quantised"`` puts each block's sum on a signed ``a_bits`` grid
with a learned step (LSQ, whatever the method: the stream is signed, so neither DoReFa's [0, 1] nor PACT's
[0, alpha] fits it), as an accelerator that stores the stream at activation precision would."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from quantlib.mixed_precision import switchable
from quantlib.mixed_precision.layers import FULL_PRECISION, SwitchableResidual
from quantlib.zoo.preact_resnet import PreActResNet

METHODS = ("dorefa", "pact", "lsq")
RESIDUALS = ("float", "quantised")


@dataclass(frozen=True)
class QuantSpec:
    """Weight bits, activation bits (1..16, or 32 for full precision) and the activation quantiser."""

    w_bits: int = 32
    a_bits: int = 32
    method: str = "dorefa"

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits"):
            bits = getattr(self, name)
            if not (isinstance(bits, int) and (1 <= bits <= 16 or bits == FULL_PRECISION)):
                raise ValueError(f"QuantSpec: {name}={bits!r} must be an integer from 1 to 16, or 32 (full "
                                 f"precision).")
        if self.method not in METHODS:
            raise ValueError(f"QuantSpec: method {self.method!r} is not one of {list(METHODS)}.")

    def label(self) -> str:
        return f"{self.w_bits}/{self.a_bits}"


def quantised_preact_resnet(depth: int, spec: QuantSpec, num_classes: int = 10, width: int = 1,
                            bottleneck: bool = False, quantise_first_last: bool = False,
                            in_channels: int = 3, residual: str = "float") -> nn.Module:
    """The pre-activation ResNet of ``depth`` quantised by ``spec`` (the module doc)."""
    if residual not in RESIDUALS:
        raise ValueError(f"quantised_preact_resnet: residual {residual!r} is not one of {list(RESIDUALS)}.")
    model = PreActResNet(depth, num_classes, width, bottleneck, in_channels)
    options = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            options[name] = [spec.a_bits]
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            options[name] = [spec.w_bits]
    if not quantise_first_last:
        options["conv1"] = options["fc"] = [FULL_PRECISION]
    weights = "lsq" if spec.method == "lsq" else "dorefa"
    model = switchable(model, [spec.w_bits], weights, spec.method, batchnorm="shared", layer_options=options)
    if residual == "quantised":
        for name in [name for name, m in model.named_modules() if name.endswith(".residual")]:
            model.set_submodule(name, SwitchableResidual([spec.a_bits]))
    return model
