"""The one small hierarchy of exceptions quantlib raises.

Every message names the layer or node concerned, the rule that was broken, and what the user can do about it.
"""


class QuantlibError(Exception):
    """Base class of every error quantlib raises on purpose."""


class TraceError(QuantlibError):
    """The model could not be traced into a torch.fx graph."""


class UnsupportedOpError(QuantlibError):
    """The graph holds an operation that the current stage has no rule for."""


class EditorError(QuantlibError):
    """A graph editor's precondition or postcondition does not hold."""


class HardwareRuleError(QuantlibError):
    """A layer breaks a rule of the target hardware."""


class CalibrationError(QuantlibError):
    """Observed statistics are unusable (no data, NaN, Inf)."""


class ExportError(QuantlibError):
    """The network cannot be written in the requested format."""
