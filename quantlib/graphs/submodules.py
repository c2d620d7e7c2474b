"""The submodules a GraphModule's graph no longer reads, deleted in time linear in the graph (torch.fx's
``delete_all_unused_submodules`` tests every name against a list of the used ones)."""

from __future__ import annotations

import torch.fx as fx


def delete_unused_submodules(gm: fx.GraphModule) -> None:
    """Delete every submodule of ``gm`` that no node calls or reads, and that holds none that is."""
    used: set[str] = set()
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "get_attr") or not isinstance(node.target, str):
            continue
        parts = node.target.split(".")
        used.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # the target and its parents
        if node.op == "call_module":
            try:
                called = gm.get_submodule(node.target)
            except AttributeError:
                continue
            used.update(f"{node.target}.{name}" for name, _ in called.named_modules() if name)
    for name in [name for name, _ in gm.named_modules() if name and name not in used]:
        gm.delete_submodule(name)
