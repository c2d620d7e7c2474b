"""Tracing models into torch.fx graphs, shape annotation, and a networkx view."""

from quantlib.graphs.networkx_view import to_networkx
from quantlib.graphs.tracing import QuantlibTracer, annotate_shapes, leaf_module, trace

__all__ = ["QuantlibTracer", "annotate_shapes", "leaf_module", "to_networkx", "trace"]
