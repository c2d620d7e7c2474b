"""quantlib: turn a trained PyTorch model into a quantised, integer program for DIANA by small graph edits."""

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
from quantlib.graphs import to_networkx, trace

__all__ = ["CalibrationError", "EditorError", "ExportError", "HardwareRuleError", "QuantlibError", "TraceError",
           "UnsupportedOpError", "canonicalise", "to_networkx", "trace"]
