"""Give every call site its own module: ``self.relu`` called twice becomes ``relu`` and ``relu_1``.

Each call site needs its own quantiser state (statistics, scales), so a module called at several places is copied,
one copy per extra call site. A copied module with parameters no longer shares them with the original: a warning says
so, since weight tying is lost for further training.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict

import torch.fx as fx

from quantlib.editors.base import ApplicationPoint, Applier, Finder, RewriteRule
from quantlib.graphs.naming import unique_submodule_name

logger = logging.getLogger(__name__)


class ReusedModuleFinder(Finder):
    """One point per module called from more than one node: the calls, in graph order."""

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        calls: dict[str, list[fx.Node]] = defaultdict(list)
        for node in gm.graph.nodes:
            if node.op == "call_module":
                calls[node.target].append(node)
        return [ApplicationPoint(nodes=tuple(nodes), roles={"first": nodes[0]})
                for nodes in calls.values() if len(nodes) > 1]


class CopyPerCallApplier(Applier):
    """Keep the module for its first call; give each later call a deep copy registered beside it."""

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        target = point["first"].target
        module = gm.get_submodule(target)
        parent, _, base = target.rpartition(".")
        if any(True for _ in module.parameters()):
            logger.warning("Module '%s' is called %d times; each call gets its own copy of its parameters, which no "
                           "longer stay tied in training.", target, len(point.nodes))
        for node in point.nodes[1:]:
            name = unique_submodule_name(gm, parent, base)
            gm.add_submodule(name, copy.deepcopy(module))
            node.target = name


SPLIT_REUSED_MODULES = RewriteRule("SplitReusedModules", ReusedModuleFinder(), CopyPerCallApplier())
"""After this editor every module is called from exactly one node."""
