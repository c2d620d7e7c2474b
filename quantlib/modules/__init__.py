"""Modules quantlib puts into graphs: the float ``Add``, quantisation specs, and the quantised modules."""

from quantlib.modules.add import Add
from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import QModule
from quantlib.specs import QGranularity, QHParamsInitStrategy, QRange, QuantiserSpec

__all__ = ["Add", "QConv2d", "QGranularity", "QHParamsInitStrategy", "QHarmonisedAdd", "QIdentity", "QLinear", "QRange",
           "QReLU", "QuantiserSpec", "QModule"]
