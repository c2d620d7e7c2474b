"""``switchable(model, options)``: a copy of a float model whose Conv1d / Conv2d / Linear layers and ReLUs switch
bit-width, and whose BatchNorms follow them (``batchnorm``):

- ``"switchable"`` (the default): one set of statistics and affine parameters per bit-width of the layer a BatchNorm
  reads, as Any-Precision DNNs and AdaBits do; the statistics of a k-bit layer's output differ from a 2k-bit one's,
  and keeping them apart costs only ``len(options)`` small copies, no extra passes at evaluation.
- ``"shared"``: one BatchNorm across bit-widths (its statistics a mixture of every configuration trained).
- ``"recalibrate"``: one BatchNorm, re-estimated on training batches for each configuration before it is
  evaluated (``recalibrate_batchnorm``): the most faithful statistics, at N forward passes per configuration.

The model's forward is kept as written. A ReLU applied as a function (``F.relu``, ``torch.relu``, ``x.relu()``)
cannot switch, so a model that has one is returned as its traced GraphModule with each such call turned into an
``nn.ReLU`` module named after its node (``relu_1``, ...), which then switches like the others; a model that torch.fx
cannot trace keeps its class, and its functional ReLUs stay float (use ``nn.ReLU`` modules there).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from quantlib.errors import TraceError
from quantlib.graphs.tracing import trace
from quantlib.mixed_precision.layers import (
    ACTIVATION_QUANTISERS,
    SWITCHABLE_OF,
    WEIGHT_QUANTISERS,
    SwitchableActivation,
    SwitchableBatchNorm,
    check_options,
    switchable_linear_op,
)

BATCHNORM_MODES = ("switchable", "shared", "recalibrate")
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
FUNCTIONAL_RELUS = {F.relu, F.relu_, torch.relu, torch.relu_}


def switchable(model: nn.Module, bitwidth_options: Sequence[int], weight_quantization: str = "dorefa",
               activation_quantization: str = "dorefa", switchable_clipping: bool = False,
               sat_weight_normalization: bool = False, batchnorm: str = "switchable",
               layer_options: Mapping[str, Sequence[int]] | None = None) -> nn.Module:
    """The switchable-precision copy of ``model`` (left untouched), every layer at its highest option.
    ``layer_options`` gives named layers their own options (say ``{"conv1": [8], "fc": [8]}`` for a fixed 8-bit
    stem and head)."""
    options = check_options(bitwidth_options, "switchable()")
    if weight_quantization not in WEIGHT_QUANTISERS:
        raise ValueError(f"switchable(): weight_quantization {weight_quantization!r} is not one of "
                         f"{list(WEIGHT_QUANTISERS)}.")
    if activation_quantization not in ACTIVATION_QUANTISERS:
        raise ValueError(f"switchable(): activation_quantization {activation_quantization!r} is not one of "
                         f"{list(ACTIVATION_QUANTISERS)}.")
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"switchable(): batchnorm {batchnorm!r} is not one of {list(BATCHNORM_MODES)}.")
    model, graph = _traced(copy.deepcopy(model), batchnorm)
    modules = dict(model.named_modules())
    own = dict(layer_options or {})
    convertible = {name for name, m in modules.items() if type(m) in SWITCHABLE_OF or type(m) is nn.ReLU}
    unknown = sorted(set(own) - convertible)
    if unknown:
        raise ValueError(f"switchable(): layer_options names {unknown}, which are not Conv1d / Conv2d / Linear / ReLU "
                         f"modules of the model; those are {sorted(convertible)}.")
    for name in sorted(convertible):
        layer_opts = check_options(own[name], f"switchable(): layer_options['{name}']") if name in own else options
        m = modules[name]
        if type(m) is nn.ReLU:
            twin = SwitchableActivation(layer_opts, activation_quantization, switchable_clipping)
        else:
            twin = switchable_linear_op(m, layer_opts, sat_weight_normalization, weight_quantization)
        model.set_submodule(name, twin)
    if batchnorm == "switchable":
        converted = dict(model.named_modules())
        for bn_name, source_name in _batchnorm_sources(graph, modules).items():
            model.set_submodule(bn_name, SwitchableBatchNorm(modules[bn_name], converted[source_name]))
    return model


def _traced(model: nn.Module, batchnorm: str) -> tuple[nn.Module, fx.Graph | None]:
    """The model (its GraphModule with functional ReLUs made modules, if it has any) and its graph; no graph if it
    does not trace and the BatchNorm mode needs none."""
    try:
        gm = trace(model)
    except TraceError as error:
        if batchnorm == "switchable":
            raise ValueError(f"switchable(): batchnorm='switchable' needs the model's graph to find the layer each "
                             f"BatchNorm reads ({error}); or use batchnorm='shared' or 'recalibrate'.") from error
        return model, None
    functional = [n for n in gm.graph.nodes if (n.op == "call_function" and n.target in FUNCTIONAL_RELUS)
                  or (n.op == "call_method" and n.target in ("relu", "relu_"))]
    if not functional:
        return model, gm.graph
    for node in functional:
        gm.add_submodule(node.name, nn.ReLU())
        with gm.graph.inserting_before(node):
            module_call = gm.graph.call_module(node.name, (node.args[0],))
        module_call.meta = dict(node.meta)
        node.replace_all_uses_with(module_call)
        gm.graph.erase_node(node)
    gm.recompile()
    return gm, gm.graph


def _batchnorm_sources(graph: fx.Graph, modules: Mapping[str, nn.Module]) -> dict[str, str]:
    """For each BatchNorm, the convertible layer whose output it reads (through single-input ops: reshapes, pools);
    a BatchNorm reading none (the network input, an add, a concatenation) is left out and stays shared."""
    sources = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], BATCHNORMS):
            continue
        current = node.args[0]
        while isinstance(current, fx.Node):
            module = modules.get(current.target) if current.op == "call_module" else None
            if module is not None and (type(module) in SWITCHABLE_OF or type(module) is nn.ReLU):
                sources[node.target] = current.target
                break
            inputs = current.all_input_nodes
            current = inputs[0] if len(inputs) == 1 else None
    return sources
