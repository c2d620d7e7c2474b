"""quantlib: turn a trained PyTorch model into a quantised, integer program for DIANA by small graph edits."""

from quantlib.calibration import calibrate
from quantlib.editors.canonicalise import canonicalise
from quantlib.errors import (
    CalibrationError,
    EditorError,
    ExportError,
    HardwareRuleError,
    QuantlibError,
    TraceError,
    UnsupportedOpError,
)
from quantlib.fake_quantisation import QuantisationSpec, quantize
from quantlib.graphs import to_networkx, trace

__all__ = ["CalibrationError", "EditorError", "ExportError", "HardwareRuleError", "QuantisationSpec", "QuantlibError",
           "TraceError", "UnsupportedOpError", "calibrate", "canonicalise", "quantize", "to_networkx", "trace"]
