"""Turn functional calls (``F.relu(x)``, ``x.relu()``, ``x + y``, ``torch.flatten(x, 1)``, ``x.mean((2, 3))``,
``torch.cat([x, y], 1)``, ...)
into modules.

Later stages quantise modules; a functional op has nowhere to keep a quantiser's state. Each rule below names the
functions and methods it covers, their Python signature, and the module that computes the same thing. A call whose
non-tensor arguments are themselves traced values (``F.avg_pool2d(x, x.size(2))``) is left as it is, except for the
flattening views ``x.view(x.size(0), -1)`` / ``x.reshape(...)``, recognised by their shapes.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, RewriteRule
from quantlib.graphs.naming import parent_module_path, unique_submodule_name
from quantlib.graphs.value_kinds import tensor_valued_nodes
from quantlib.modules.add import Add
from quantlib.modules.average_pool import AveragePool2d
from quantlib.modules.concat import Concat

Arguments = dict[str, Any]


@dataclass(frozen=True)
class ModularRule:
    """How one functional op becomes a module.

    ``signature`` is a function whose parameters name the op's arguments; ``inputs`` are the tensor arguments that
    become the module's inputs (an argument holding a list of tensors gives them all); ``build`` returns the module,
    or None when this particular call cannot be converted.
    """

    name: str
    functions: tuple[Callable, ...]
    methods: tuple[str, ...]
    signature: Callable
    build: Callable[[Arguments, fx.Node, set[fx.Node]], nn.Module | None]
    inputs: tuple[str, ...] = ("input",)
    traced_args_allowed: tuple[str, ...] = field(default=())


def _activation(input, inplace=False): ...
def _leaky_relu(input, negative_slope=0.01, inplace=False): ...
def _hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False): ...
def _max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...
def _avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None): ...
def _adaptive_avg_pool2d(input, output_size): ...
def _mean(input, dim=None, keepdim=False, *, dtype=None): ...
def _clamp(input, min=None, max=None): ...
def _flatten(input, start_dim=0, end_dim=-1): ...
def _view(input, *shape): ...
def _add(input, other, alpha=1): ...
def _cat(tensors, dim=0, *, out=None): ...


def _build_max_pool(a: Arguments, node: fx.Node, tensors: set[fx.Node]) -> nn.Module | None:
    if a["return_indices"]:
        return None
    return nn.MaxPool2d(a["kernel_size"], a["stride"], a["padding"], a["dilation"], ceil_mode=a["ceil_mode"])


def _build_avg_pool(a: Arguments, node: fx.Node, tensors: set[fx.Node]) -> nn.Module | None:
    return AveragePool2d.from_torch(nn.AvgPool2d(a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                                                 a["count_include_pad"], a["divisor_override"]))


def _build_clamp(a: Arguments, node: fx.Node, tensors: set[fx.Node]) -> nn.Module | None:
    """``torch.clamp(x, 0, 6)`` is ReLU6 and ``x.clamp(min=0)`` ReLU; other bounds stay functional."""
    bounds = (a["min"], a["max"])
    if not all(b is None or isinstance(b, (int, float)) for b in bounds):
        return None
    return {(0, 6): nn.ReLU6(), (0, None): nn.ReLU()}.get(bounds)


SPATIAL_DIMS = ({2, 3}, {-2, -1})


def _build_mean(a: Arguments, node: fx.Node, tensors: set[fx.Node]) -> nn.Module | None:
    """``x.mean((2, 3))`` / ``torch.mean(x, [-2, -1], keepdim=True)`` on a 4-D tensor is global average pooling."""
    dims = a["dim"]
    meta = a["input"].meta.get("tensor_meta")
    if not isinstance(dims, (tuple, list)) or len(dims) != 2 or set(dims) not in SPATIAL_DIMS or a["dtype"] is not None:
        return None
    if meta is not None and len(meta.shape) != 4:
        return None
    return AveragePool2d(keepdim=bool(a["keepdim"]))


def _build_add(a: Arguments, node: fx.Node, tensors: set[fx.Node]) -> nn.Module | None:
    both_tensors = a["input"] in tensors and a["other"] in tensors
    return Add() if both_tensors and a["alpha"] == 1 else None


def _build_concat(a: Arguments, node: fx.Node, tensors: set[fx.Node]) -> nn.Module | None:
    """``torch.cat([x, y], 1)`` of feature maps, along the channels (dim 1, or -1 of a 2-D tensor)."""
    meta = a["tensors"][0].meta.get("tensor_meta")
    rank = len(meta.shape) if meta is not None else None
    along_channels = a["dim"] == 1 or (rank is not None and a["dim"] == 1 - rank)
    return Concat(1) if along_channels and a["out"] is None else None


def _is_batch_size(value: Any) -> bool:
    """``t.size(0)``, ``t.size()[0]`` or ``t.shape[0]``: the traced batch size of some tensor."""
    if not isinstance(value, fx.Node):
        return False
    if value.op == "call_method" and value.target == "size":
        return len(value.args) == 2 and value.args[1] == 0 or value.kwargs.get("dim") == 0
    if value.op == "call_function" and value.target is operator.getitem and value.args[1] == 0:
        shape = value.args[0]
        return isinstance(shape, fx.Node) and (
            shape.op == "call_method" and shape.target == "size" and len(shape.args) == 1
            or shape.op == "call_function" and shape.target is getattr and shape.args[1] == "shape")
    return False


def _build_flatten_view(a: Arguments, node: fx.Node, tensors: set[fx.Node]) -> nn.Module | None:
    """A view / reshape that keeps dimension 0 and flattens the rest is ``nn.Flatten(1)``."""
    shape = a["shape"][0] if len(a["shape"]) == 1 and isinstance(a["shape"][0], (tuple, list)) else a["shape"]
    source = a["input"]
    if "tensor_meta" in source.meta and "tensor_meta" in node.meta:
        in_shape = tuple(source.meta["tensor_meta"].shape)
        out_shape = tuple(node.meta["tensor_meta"].shape)
        is_flatten = len(in_shape) >= 2 and out_shape == (in_shape[0], math.prod(in_shape[1:]))
    else:
        is_flatten = len(shape) == 2 and shape[1] == -1 and _is_batch_size(shape[0])
    return nn.Flatten(1, -1) if is_flatten else None


RULES: tuple[ModularRule, ...] = (
    ModularRule("relu", (F.relu, torch.relu), ("relu",), _activation, lambda a, n, t: nn.ReLU()),
    ModularRule("relu6", (F.relu6,), (), _activation, lambda a, n, t: nn.ReLU6()),
    ModularRule("leaky_relu", (F.leaky_relu,), (), _leaky_relu, lambda a, n, t: nn.LeakyReLU(a["negative_slope"])),
    ModularRule("hardtanh", (F.hardtanh,), (), _hardtanh, lambda a, n, t: nn.Hardtanh(a["min_val"], a["max_val"])),
    ModularRule("relu6", (torch.clamp, torch.clip), ("clamp", "clip"), _clamp, _build_clamp),
    ModularRule("maxpool", (F.max_pool2d, torch.max_pool2d), (), _max_pool2d, _build_max_pool),
    ModularRule("avgpool", (F.avg_pool2d,), (), _avg_pool2d, _build_avg_pool),
    ModularRule("avgpool", (F.adaptive_avg_pool2d,), (), _adaptive_avg_pool2d,
                lambda a, n, t: AveragePool2d.from_torch(nn.AdaptiveAvgPool2d(a["output_size"]))),
    ModularRule("avgpool", (torch.mean,), ("mean",), _mean, _build_mean),
    ModularRule("flatten", (torch.flatten,), ("flatten",), _flatten,
                lambda a, n, t: nn.Flatten(a["start_dim"], a["end_dim"])),
    ModularRule("flatten", (), ("view", "reshape"), _view, _build_flatten_view, traced_args_allowed=("shape",)),
    ModularRule("add", (operator.add, torch.add), ("add",), _add, _build_add, inputs=("input", "other")),
    ModularRule("cat", (torch.cat, torch.concat, torch.concatenate), (), _cat, _build_concat, inputs=("tensors",)),
)

_RULE_OF_FUNCTION = {f: rule for rule in RULES for f in rule.functions}
_RULE_OF_METHOD = {m: rule for rule in RULES for m in rule.methods}


def _contains_node(value: Any) -> bool:
    if isinstance(value, fx.Node):
        return True
    if isinstance(value, (tuple, list)):
        return any(_contains_node(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_node(v) for v in value.values())
    return False


def _rule_for(node: fx.Node) -> ModularRule | None:
    if node.op == "call_function":
        return _RULE_OF_FUNCTION.get(node.target)
    if node.op == "call_method":
        return _RULE_OF_METHOD.get(node.target)
    return None


@dataclass(frozen=True, eq=False)
class ModularCall(ApplicationPoint):
    """A functional call together with the rule that converts it and the module that replaces it."""

    rule: ModularRule | None = None
    module: nn.Module | None = None


@functools.cache
def _signature(function: Callable) -> inspect.Signature:
    return inspect.signature(function)


def _bind(node: fx.Node, rule: ModularRule) -> Arguments | None:
    """The call's arguments by parameter name, defaults filled in; None if they do not fit the rule's signature."""
    try:
        bound = _signature(rule.signature).bind(*node.args, **node.kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def _module_inputs(args: Arguments, rule: ModularRule) -> tuple[Any, ...]:
    """The module's inputs in order: each input argument, a list argument spread into its elements."""
    return tuple(x for name in rule.inputs
                 for x in (args[name] if isinstance(args[name], (tuple, list)) else (args[name],)))


def _convert(node: fx.Node, tensors: set[fx.Node]) -> ModularCall | None:
    rule = _rule_for(node)
    args = _bind(node, rule) if rule is not None else None
    if args is None or not all(isinstance(x, fx.Node) and x in tensors for x in _module_inputs(args, rule)):
        return None
    constants = {k: v for k, v in args.items() if k not in rule.inputs and k not in rule.traced_args_allowed}
    if _contains_node(constants):
        return None
    module = rule.build(args, node, tensors)
    if module is None:
        return None
    return ModularCall(nodes=(node,), roles={"call": node}, rule=rule, module=module)


class FunctionalCallFinder(Finder):
    """Every functional call that a rule in RULES can turn into a module."""

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        tensors = tensor_valued_nodes(gm)
        return [call for node in gm.graph.nodes if (call := _convert(node, tensors)) is not None]


class ModuleCallApplier(Applier):
    """Register the module beside the code that made the call (``layer1.0.relu``) and call it instead."""

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        assert isinstance(point, ModularCall)
        node = point["call"]
        module_name = unique_submodule_name(gm, parent_module_path(node), point.rule.name)
        gm.add_submodule(module_name, point.module)
        args = _bind(node, point.rule)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(module_name, args=_module_inputs(args, point.rule))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        old_inputs = node.all_input_nodes
        gm.graph.erase_node(node)
        for arg in old_inputs:
            _erase_unused_shape_queries(gm, arg)


def _erase_unused_shape_queries(gm: fx.GraphModule, node: fx.Node) -> None:
    """Remove ``x.size(0)`` and the like once nothing reads them (they have no side effect)."""
    is_query = (node.op == "call_method" and node.target == "size"
                or node.op == "call_function" and node.target in (operator.getitem, getattr))
    if is_query and not node.users:
        inputs = node.all_input_nodes
        gm.graph.erase_node(node)
        for arg in inputs:
            _erase_unused_shape_queries(gm, arg)


FUNCTIONAL_TO_MODULAR = RewriteRule("FunctionalToModular", FunctionalCallFinder(), ModuleCallApplier())
"""Every convertible functional op becomes a call of an equivalent module."""
