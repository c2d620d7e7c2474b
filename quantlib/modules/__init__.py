"""Modules quantlib inserts into graphs: float helpers (Add) and, later, the quantised modules."""

from quantlib.modules.add import Add

__all__ = ["Add"]
