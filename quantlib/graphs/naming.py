"""Names for submodules that editors add to a GraphModule."""

from __future__ import annotations

import torch.fx as fx


def parent_module_path(node: fx.Node) -> str:
    """The qualified name of the module whose ``forward`` issued ``node`` ('' for the top level), from the tracer."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    if node.op == "call_module" and path == node.target:  # the stack of a module call ends with the module itself
        path = list(stack.values())[-2][0] if len(stack) > 1 else ""
    return path


def unique_submodule_name(gm: fx.GraphModule, parent: str, base: str) -> str:
    """A qualified name ``parent.base`` (or ``parent.base_1``, ...) that no attribute of ``gm`` holds yet."""
    try:
        owner = gm.get_submodule(parent)
    except AttributeError:
        owner = None
    name, k = base, 0
    while owner is not None and hasattr(owner, name):
        k += 1
        name = f"{base}_{k}"
    return f"{parent}.{name}" if parent else name
