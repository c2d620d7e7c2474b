"""Symbolic tracing of float or quantised models into torch.fx GraphModules.

Quantlib's own modules are leaves (editors rewrite them as units); standard ``torch.nn`` modules are leaves as in
torch.fx.
When tracing fails, the error names the module being traced and the user's source line, and says what to do.
"""

from __future__ import annotations

import linecache
import os
import sys
import traceback
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from quantlib.errors import TraceError
from quantlib.graphs.graph_copy import graph_copy

_LEAF_TYPES: set[type[nn.Module]] = set()


def leaf_module(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: the tracer keeps instances of ``cls`` as single call_module nodes."""
    _LEAF_TYPES.add(cls)
    return cls


class QuantlibTracer(fx.Tracer):
    """An fx tracer that keeps quantlib (and user-chosen) modules as leaves and remembers the module being traced."""

    def __init__(self, leaf_types: Iterable[type[nn.Module]] = (), leaf_names: Iterable[str] = ()) -> None:
        super().__init__()
        self.extra_leaf_types = tuple(leaf_types)
        self.leaf_names = set(leaf_names)
        self.module_path: list[str] = []
        self.failed_module: str | None = None  # the innermost module being traced when tracing failed

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, tuple(_LEAF_TYPES)) or isinstance(m, self.extra_leaf_types):
            return True
        if module_qualified_name in self.leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        """Every node also records the user's source line that made it (``source_line``)."""
        node = super().create_node(*args, **kwargs)
        node.meta["source_line"] = _calling_user_line()
        return node

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        self.module_path.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_module is None:
                self.failed_module = self.module_path[-1]
            raise
        finally:
            self.module_path.pop()


_TORCH_DIR = os.path.dirname(torch.__file__)
_QUANTLIB_GRAPHS_DIR = os.path.dirname(__file__)


def _is_user_frame(filename: str) -> bool:
    return not filename.startswith(_TORCH_DIR) and not filename.startswith(_QUANTLIB_GRAPHS_DIR)


def _user_source_line(exc: BaseException) -> str:
    """The innermost frame of the traceback that is neither torch's nor this file's: where the user's code failed."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_frame(f.filename)]
    if not frames:
        return "<unknown source line>"
    f = frames[-1]
    return f"{f.filename}:{f.lineno}: {(f.line or '').strip()}"


_TRACE_CODE = fx.Tracer.trace.__code__


def _calling_user_line() -> str | None:
    """'file:line: code' of the innermost frame of the model's code being traced that is neither torch's nor this
    package's (None when there is none between here and ``Tracer.trace``)."""
    frame = sys._getframe(1)
    while frame is not None and not _is_user_frame(frame.f_code.co_filename):
        if frame.f_code is _TRACE_CODE:
            return None
        frame = frame.f_back
    if frame is None:
        return None
    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{frame.f_code.co_filename}:{frame.f_lineno}: {code}"


def source_line(node: fx.Node) -> str | None:
    """'file:line: code' of the user's statement that made ``node`` when quantlib traced it (None for nodes editors
    added, or graphs traced elsewhere)."""
    return node.meta.get("source_line")


def _advice(exc: BaseException, path: str) -> str:
    leaf = f"trace(..., leaf_modules=['{path}'])" if path else "trace(..., leaf_modules=[...])"
    text = str(exc)
    if "control flow" in text or "iterate" in text or "Proxy" in type(exc).__name__:
        return ("The branch depends on the values of a tensor, which tracing cannot see. Either rewrite it without "
                "Python control flow (torch.where, masking), pass the deciding value as a constant with "
                f"trace(..., concrete_args={{...}}), or make the module a leaf with {leaf} so that it is kept as one "
                "opaque node.")
    return (f"Make the module a leaf with {leaf} so that it is kept as one node, pass the "
            "offending arguments as constants with trace(..., concrete_args={...}), or rewrite the call with torch "
            "operations that torch.fx can record.")


def trace(model: nn.Module,
          example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
          *,
          leaf_modules: Iterable[type[nn.Module] | str] = (),
          concrete_args: dict[str, Any] | None = None) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule; with ``example_input`` every node also gets its shape (``tensor_meta``).

    ``leaf_modules`` are module types or qualified names to keep as opaque nodes. Raises TraceError naming the module
    path and the source line when tracing fails.
    """
    leaf_modules = list(leaf_modules)
    tracer = QuantlibTracer(leaf_types=[m for m in leaf_modules if isinstance(m, type)],
                            leaf_names=[m for m in leaf_modules if isinstance(m, str)])
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
    except Exception as exc:  # noqa: BLE001 - every tracing failure becomes one actionable TraceError
        path = tracer.failed_module or ""
        where = f"module '{path}' ({type(model.get_submodule(path)).__name__})" if path else \
            f"the top-level module ({type(model).__name__})"
        raise TraceError(f"Cannot trace {where} at {_user_source_line(exc)}: {type(exc).__name__}: {exc}. "
                         f"{_advice(exc, path)}") from exc
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    if example_input is not None:
        annotate_shapes(gm, example_input)
    return gm


def has_shapes(gm: fx.GraphModule, for_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None) -> bool:
    """Whether every node of ``gm`` (but the output) carries ``tensor_meta`` (copies and edits keep it) and, with
    ``for_input``, the inputs' shapes are those of ``for_input`` (shapes follow from them)."""
    if not all("tensor_meta" in n.meta for n in gm.graph.nodes if n.op != "output"):
        return False
    if for_input is None:
        return True
    inputs = for_input if isinstance(for_input, tuple) else (for_input,)
    graph_inputs = gm.graph.find_nodes(op="placeholder")
    shapes = [node.meta["tensor_meta"].shape for node in graph_inputs]
    return shapes == [x.shape for x in inputs]


def same_shape(node: fx.Node, like: fx.Node) -> None:
    """``node`` (new: a requantisation, a scaling) holds a value of ``like``'s shape: give it ``like``'s
    ``tensor_meta``, if ``like`` has one."""
    if "tensor_meta" in like.meta:
        node.meta["tensor_meta"] = like.meta["tensor_meta"]


def with_shapes(gm: fx.GraphModule, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """``gm`` if it has the shapes of ``example_input``; else a copy of its graph (over the same modules) that has
    them, so that the caller's graph is not written."""
    if has_shapes(gm, example_input):
        return gm
    copied = graph_copy(gm)
    annotate_shapes(copied, example_input)
    return copied


def ensure_shapes(gm: fx.GraphModule, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
    """``annotate_shapes``, unless every node of ``gm`` already has the shapes of ``example_input``."""
    if not has_shapes(gm, example_input):
        annotate_shapes(gm, example_input)


def annotate_shapes(gm: fx.GraphModule, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
    """Run ``example_input`` through ``gm`` and store each node's shape and dtype in ``node.meta['tensor_meta']``."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    was_training = {m: m.training for m in gm.modules()}
    gm.eval()  # no BatchNorm statistics may change while we only look at shapes
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    finally:
        for m, mode in was_training.items():
            m.training = mode
