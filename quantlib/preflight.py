"""The pre-flight check: before any stage runs, every node of the canonical float graph is a construct the target
takes, or it is reported, all at once, with the module path, the user's source line, why, and the spelling that works.

A target's constructs are a value (``Constructs``): the canonical modules it takes and the constructs it refuses, each
refusal with its reason and fix. Anything neither taken nor listed is refused too, as an op quantlib has no rule for.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from quantlib.editors.canonicalise.fold_batchnorm import LINEAR_TYPES
from quantlib.errors import HardwareRuleError, UnsupportedOpError
from quantlib.graphs.naming import parent_module_path
from quantlib.graphs.tracing import source_line
from quantlib.graphs.value_kinds import tensor_valued_nodes
from quantlib.modules.add import Add
from quantlib.modules.average_pool import AveragePool2d
from quantlib.modules.concat import Concat


@dataclass(frozen=True)
class Construct:
    """A construct a target refuses: how users spell it, what the target lacks, and what works instead."""

    spelling: str
    lacks: str
    fix: str
    modules: tuple[type[nn.Module], ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """One node of the user's model that the target cannot take."""

    node: str
    module: str       # the module path ('' for the top-level forward)
    spelling: str     # what the user wrote: nn.Hardswish, torch.cat, x.sigmoid()
    source: str       # file:line: code, or '<no source line>'
    reason: str
    fix: str

    def __str__(self) -> str:
        return (f"{self.module or '<top level>'} ({self.spelling}) at {self.source}\n"
                f"      {self.reason} Fix: {self.fix}")


@dataclass(frozen=True)
class Constructs:
    """What a target takes of a canonical float graph: ``modules`` (by exact type), and the ``refused`` constructs."""

    target: str
    modules: tuple[type[nn.Module], ...]
    refused: tuple[Construct, ...]

    def refusing(self, target: str, *constructs: Construct) -> Constructs:
        """This table for another target that also refuses ``constructs`` (and no longer takes their modules)."""
        dropped = {m for c in constructs for m in c.modules}
        return Constructs(target, tuple(m for m in self.modules if m not in dropped), (*constructs, *self.refused))

    def refusal_of(self, node: fx.Node, module: nn.Module | None) -> Construct | None:
        """The listed refusal that matches ``node`` (first match), if any."""
        for c in self.refused:
            if (module is not None and type(module) in c.modules or node.op == "call_function"
                    and node.target in c.functions or node.op == "call_method" and node.target in c.methods):
                return c
        return None


ACTIVATIONS_FIX = "use nn.ReLU or nn.ReLU6 (torch.clamp(x, 0, 6))."
GENERIC_REFUSED = (
    Construct("nn.Hardswish, F.hardswish", "Hardswish (x * relu6(x + 3) / 6 multiplies two activations)",
              ACTIVATIONS_FIX, (nn.Hardswish,), (F.hardswish,), ("hardswish",)),
    Construct("nn.SiLU, F.silu", "SiLU (x * sigmoid(x) needs a sigmoid and a multiplication)", ACTIVATIONS_FIX,
              (nn.SiLU,), (F.silu,), ("silu",)),
    Construct("nn.Sigmoid, torch.sigmoid, x.sigmoid()", "sigmoid (nor the gates built with it)",
              "use nn.ReLU6, or drop the gate (a squeeze-excitation block has no integer form here).",
              (nn.Sigmoid, nn.Hardsigmoid), (torch.sigmoid, F.sigmoid, F.hardsigmoid), ("sigmoid",)),
    Construct("nn.Tanh, nn.GELU, nn.ELU, nn.Softmax", "Tanh, GELU, ELU, SELU or softmax",
              "use nn.ReLU or nn.ReLU6; compute a softmax on the integer logits outside the network.",
              (nn.Tanh, nn.GELU, nn.ELU, nn.SELU, nn.Softmax, nn.LogSoftmax, nn.Softplus, nn.Mish),
              (torch.tanh, F.tanh, F.gelu, F.elu, F.selu, F.softmax, F.log_softmax, torch.softmax, F.mish),
              ("tanh", "softmax", "log_softmax")),
    Construct("nn.LeakyReLU, F.leaky_relu, nn.PReLU", "LeakyReLU (its negative slope is a multiplier)",
              "use nn.ReLU.", (nn.LeakyReLU, nn.PReLU, nn.RReLU), (F.leaky_relu, F.prelu)),
    Construct("nn.Hardtanh / torch.clamp with bounds other than (0, 6)", "clip to bounds other than (0, 6)",
              "use torch.clamp(x, 0, 6) / nn.ReLU6 or nn.ReLU.", (nn.Hardtanh,), (torch.clamp, torch.clip),
              ("clamp", "clip")),
    Construct("F.interpolate, nn.Upsample", "interpolation", "upsample with a strided nn.ConvTranspose2d outside "
              "the quantised network, or change the architecture.",
              (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d), (F.interpolate, F.upsample)),
    Construct("x * y, x * 0.5, x + 0.5, x - y, x / y", "element-wise arithmetic other than adding two tensors",
              "fold a constant factor or offset into the layer before it (its weights and bias); add tensors with "
              "x + y.", (), (operator.mul, torch.mul, operator.sub, torch.sub, operator.truediv, torch.div,
                             operator.floordiv, operator.add, torch.add), ("mul", "sub", "div", "add")),
    Construct("nn.Conv1d, nn.Conv3d, nn.ConvTranspose*", "1-D, 3-D or transposed convolution",
              "use nn.Conv2d (a 1-D signal as an (N, C, 1, L) image with a (1, k) kernel).",
              (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
              (F.conv1d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d)),
    Construct("F.conv2d, F.linear", "functional convolutions or linear ops (their weights are no module's)",
              "use nn.Conv2d / nn.Linear modules.", (), (F.conv2d, F.linear)),
    Construct("nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d", "LayerNorm, GroupNorm or InstanceNorm (they divide by "
              "statistics of the activations)", "use nn.BatchNorm2d after a conv.",
              (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d), (F.layer_norm, F.group_norm)),
    Construct("nn.AvgPool2d with ceil_mode / count_include_pad=False / divisor_override, nn.AdaptiveAvgPool2d(k>1) "
              "on a size k does not divide", "average over windows of different sizes",
              "use nn.AdaptiveAvgPool2d(1) for global pooling, or nn.AvgPool2d(k) with ceil_mode=False and "
              "count_include_pad=True.", (nn.AvgPool2d, nn.AdaptiveAvgPool2d), (F.avg_pool2d,
                                                                               F.adaptive_avg_pool2d)),
    Construct("nn.AvgPool1d, nn.MaxPool1d, nn.AdaptiveMaxPool2d", "1-D, 3-D or adaptive max pooling",
              "use nn.MaxPool2d / nn.AdaptiveAvgPool2d(1) on 4-D tensors.",
              (nn.AvgPool1d, nn.MaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.MaxPool3d),
              (F.max_pool1d, F.avg_pool1d, F.adaptive_max_pool2d)),
    Construct("F.pad, nn.ZeroPad2d, nn.ReflectionPad2d", "explicit padding (other than the option-A channel pad "
              "of a strided slice)", "give the next conv padding=k // 2.",
              (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d), (F.pad,)),
    Construct("x[...] (tensor indexing), torch.stack, x.permute, x.transpose", "indexing, stacking or permuting of "
              "tensors",
              "index only as the option-A shortcut x[:, :, ::2, ::2], with the example input given; flatten with "
              "torch.flatten(x, 1) or x.view(x.size(0), -1).", (),
              (operator.getitem, torch.stack, torch.transpose, torch.permute, torch.split, torch.chunk),
              ("permute", "transpose", "split", "chunk", "__getitem__", "unsqueeze", "squeeze")),
    Construct("x.view / x.reshape other than flattening", "reshapes other than flattening (x.view(x.size(0), -1))",
              "flatten with torch.flatten(x, 1) or x.view(x.size(0), -1).", (), (torch.reshape,),
              ("view", "reshape")),
    Construct("torch.cat along another dimension than the channels",
              "concatenation along another dimension than the channels",
              "concatenate channels: torch.cat([x, y], 1).", (), (torch.cat, torch.concat, torch.concatenate)),
)

GENERIC = Constructs("quantlib's integer path", (nn.Conv2d, nn.Linear, nn.ReLU, nn.ReLU6, nn.MaxPool2d, AveragePool2d,
                                                   nn.Flatten, Add, Concat, nn.BatchNorm2d, nn.BatchNorm1d),
                     GENERIC_REFUSED)
"""What the generic integer ONNX path takes (``quantlib.quantize``)."""

SHAPE_FIX = ("pass example_input= (one input of the model's shape) so that shapes become constants; the batch "
             "size may only be read to flatten (x.view(x.size(0), -1)).")


CANONICAL_SPELLINGS = {Concat: "torch.cat", Add: "x + y", AveragePool2d: "average pool"}
"""What the user wrote for the modules canonicalisation makes."""


def spelling(node: fx.Node, module: nn.Module | None) -> str:
    """How the user wrote ``node``: nn.Hardswish, torch.cat, operator.mul, x.sigmoid()."""
    if module is not None:
        kind = type(module)
        if kind in CANONICAL_SPELLINGS:
            return CANONICAL_SPELLINGS[kind]
        return f"nn.{kind.__name__}" if kind.__module__.startswith("torch.nn") else kind.__qualname__
    if node.op == "call_method":
        return f"x.{node.target}()"
    owner = getattr(node.target, "__module__", None) or ""
    owner = {"torch.nn.functional": "F", "torch._C._nn": "F", "_operator": "operator"}.get(owner, owner)
    return f"{owner}.{getattr(node.target, '__name__', node.target)}".lstrip(".")


def preflight(gm: fx.GraphModule, constructs: Constructs) -> list[Refusal]:
    """Every node of the canonical float graph ``gm`` that ``constructs``' target cannot take, in graph order."""
    modules = dict(gm.named_modules())
    tensors = tensor_valued_nodes(gm)
    refusals = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr") or node not in tensors:
            continue  # shape arithmetic is reported where a tensor op reads it
        module = modules.get(node.target) if node.op == "call_module" else None
        reason_fix = _refusal(node, module, tensors, modules, constructs)
        if reason_fix is not None:
            where = node.target if module is not None else parent_module_path(node)
            refusals.append(Refusal(node.name, where, spelling(node, module), source_line(node) or "<no source line>",
                                    *reason_fix))
    return refusals


def _refusal(node: fx.Node, module: nn.Module | None, tensors: set[fx.Node], modules: dict[str, nn.Module],
             constructs: Constructs) -> tuple[str, str] | None:
    """(reason, fix) when ``constructs``' target cannot take ``node``, else None."""
    target = constructs.target
    if any(a not in tensors for a in node.all_input_nodes if a.op != "get_attr"):
        return "its arguments are read from a tensor's shape at run time.", SHAPE_FIX
    if module is not None and type(module) in constructs.modules:
        return _module_refusal(node, module, modules)
    if _is_reshape(node) and "tensor_meta" not in node.meta:
        return ("Without example_input quantlib cannot tell whether this reshape only flattens.",
                "pass example_input= (one input of the model's shape), or flatten with torch.flatten(x, 1).")
    listed = constructs.refusal_of(node, module)
    if listed is not None:
        return f"{target} has no {listed.lacks}.", listed.fix
    what = type(module).__name__ if module is not None else spelling(node, None)
    return (f"{target} has no rule for {what}.",
            f"use the layers it takes ({', '.join(m.__name__ for m in constructs.modules)} and the functional "
            f"spellings of docs/supported-constructs.md), or keep this part outside the model you quantise.")


def _is_reshape(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in ("view", "reshape")
            or node.op == "call_function" and node.target is torch.reshape)


def _module_refusal(node: fx.Node, module: nn.Module, modules: dict[str, nn.Module]) -> tuple[str, str] | None:
    """A module of a type the target takes, used in a way it cannot take."""
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return (f"padding_mode={module.padding_mode!r}: integer convolutions pad with zeros.",
                "use padding_mode='zeros'.")
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        source = node.args[0]
        folds = source.op == "call_module" and isinstance(modules[source.target], LINEAR_TYPES)
        if not module.track_running_stats:
            return ("it has no running statistics (track_running_stats=False), so it normalises with batch "
                    "statistics even at inference.", "use track_running_stats=True.")
        if not folds:
            return (f"it follows '{source.name}', no Conv2d / Linear it could be folded into (a lone BatchNorm2d "
                    f"becomes a depthwise conv; a lone BatchNorm1d cannot).",
                    "put the BatchNorm1d right after a Linear, or drop it.")
    return None


def raise_refusals(target: str, refusals: Sequence[Refusal], broken_rules: Sequence[object] = ()) -> None:
    """One error listing every refusal (UnsupportedOpError) and every broken hardware rule (alone:
    HardwareRuleError), if there are any."""
    if not refusals and not broken_rules:
        return
    parts = []
    if refusals:
        parts.append(f"{len(refusals)} construct(s) of this model have no form on {target}:\n"
                     + "\n".join(f"  - {r}" for r in refusals))
    if broken_rules:
        parts.append(f"{len(broken_rules)} hardware rule(s) of {target} are broken:\n"
                     + "\n".join(f"  - {f}" for f in broken_rules))
    error = UnsupportedOpError if refusals else HardwareRuleError
    raise error("\n".join(parts) + "\nNothing was changed; fix them all, then try again.")


__all__ = ["GENERIC", "Construct", "Constructs", "Refusal", "preflight", "raise_refusals", "spelling"]
