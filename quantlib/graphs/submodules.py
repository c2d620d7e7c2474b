"""The submodules a GraphModule's graph no longer reads, deleted in one walk of the graph and one of the module tree
(torch.fx's ``delete_all_unused_submodules`` tests every name against a list of the used ones)."""

from __future__ import annotations

import torch.fx as fx


def delete_unused_submodules(gm: fx.GraphModule) -> None:
    """Delete every submodule of ``gm`` that no node calls or reads, and that holds none that is."""
    called: set[str] = set()  # a called module uses everything inside it
    parents: set[str] = set()  # the targets and the modules holding them
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "get_attr") or not isinstance(node.target, str):
            continue
        if node.op == "call_module":
            called.add(node.target)
        parts = node.target.split(".")
        parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    unused = [name for name, _ in gm.named_modules() if name and name not in parents
              and not any(prefix in called for prefix in _prefixes(name))]
    for name in unused:
        gm.delete_submodule(name)


def _prefixes(name: str) -> list[str]:
    """``'a.b.c'`` -> ``['a', 'a.b']``: the modules holding the submodule ``name``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]
