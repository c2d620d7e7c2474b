"""Remove a quantiser fed only by another quantiser: quantising twice in a row is quantising once, with the tighter
range (unsigned before signed) and the fewer levels.

- QIdentity/QReLU after QIdentity/QReLU: the looser one goes. A QReLU only gives way to another QReLU (its ReLU must
  survive), and an upstream quantiser only goes when the downstream one is its only reader.
- QIdentity/QReLU after a QHarmonisedAdd (its only reader): if tighter, it becomes the add's output quantiser
  (``add -> relu`` becomes one add with a ReLU output, as on the hardware); if looser, it goes.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, RewriteRule
from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qmodule import QModule


def _tightness(q: QModule) -> tuple[bool, int]:
    """Larger is tighter: an unsigned range, then fewer levels."""
    qrange = q.spec.qrange
    return (qrange.offset is not None and qrange.offset >= 0, -qrange.n_levels)


def _plan(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """What to do with the pair (node's input, node): 'drop_downstream', 'drop_upstream', 'into_add', or None."""
    if node.op != "call_module" or not isinstance(modules[node.target], (QIdentity, QReLU)) or len(node.args) != 1:
        return None
    upstream = node.args[0]
    if not isinstance(upstream, fx.Node) or upstream.op != "call_module":
        return None
    down, up = modules[node.target], modules[upstream.target]
    only_reader = len(upstream.users) == 1
    if isinstance(up, QHarmonisedAdd):
        if _tightness(down) > _tightness(up.output_quantiser):
            return "into_add" if only_reader else None
        return "drop_downstream" if not isinstance(down, QReLU) else None
    if not isinstance(up, (QIdentity, QReLU)):
        return None
    if _tightness(down) > _tightness(up):
        return "drop_upstream" if only_reader and (isinstance(down, QReLU) or not isinstance(up, QReLU)) else None
    return "drop_downstream" if isinstance(up, QReLU) or not isinstance(down, QReLU) else None


class ChainedQuantiserFinder(Finder):
    """Every activation quantiser whose input is another quantiser's output, when one of the two can go."""

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        points, taken = [], set()
        for node in gm.graph.nodes:
            if _plan(node, modules) is not None and node.args[0] not in taken and node not in taken:
                points.append(ApplicationPoint((node.args[0], node), {"upstream": node.args[0], "downstream": node}))
                taken.update((node.args[0], node))
        return points


class FuseApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        up, down = point["upstream"], point["downstream"]
        modules = {n.target: gm.get_submodule(n.target) for n in (up, down)}
        plan = _plan(down, modules)
        if plan == "drop_upstream":
            down.replace_input_with(up, up.args[0])
            gm.graph.erase_node(up)
            return
        if plan == "into_add":
            add = modules[up.target]
            quantiser = modules[down.target]
            quantiser.qualname = f"{add.qualname}.output_quantiser"
            add.output_quantiser = quantiser
        down.replace_all_uses_with(up)
        gm.graph.erase_node(down)


ACTIVATION_FUSER = RewriteRule("ActivationFuser", ChainedQuantiserFinder(), FuseApplier())
"""No activation quantiser that could go is fed only by another quantiser, once run to a fixed point (a chain of
three or more quantisers takes several rounds): ``FixedPoint(Rewriter(ACTIVATION_FUSER))``."""
