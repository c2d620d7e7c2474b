"""Layer inputs and outputs recorded once from calibration data, so that reconstruction never re-runs the network
per step; and the model's float twin (every quantiser switched off, the float weights and biases back) that gives
the targets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.fx as fx
from torch import nn

from quantlib.calibration import model_inputs
from quantlib.modules.average_pool import AveragePool2d
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import QModule

FLOAT_PARAMETERS = "ptq_float_parameters"
"""The key in ``gm.meta`` of the layers' float weights and biases, kept by ``remember_float_parameters``."""


def remember_float_parameters(gm: fx.GraphModule) -> None:
    """Keep a copy of every quantised layer's weight and bias, so that ``float_mode`` is the float model after the
    methods have rounded weights and corrected biases."""
    gm.meta[FLOAT_PARAMETERS] = {
        name: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
        for name, m in gm.named_modules() if isinstance(m, (QConv2d, QLinear))}


@contextmanager
def float_mode(gm: fx.GraphModule, keep: Sequence[QModule] = ()) -> Iterator[fx.GraphModule]:
    """``gm`` with every quantiser off, every average pool plain (not floored on its input's grid) and, where
    ``remember_float_parameters`` kept them, the layers' float weights and biases: the float model, BatchNorm folded;
    the quantisers and layers in ``keep`` stay as they are. Restored on exit."""
    kept = set(keep)
    quantisers = [m for m in gm.modules() if isinstance(m, QModule) and m not in kept]
    pools = [m for m in gm.modules() if isinstance(m, AveragePool2d)]
    layers = {m: params for name, params in gm.meta.get(FLOAT_PARAMETERS, {}).items()
              if (m := gm.get_submodule(name)) not in kept}
    states = [q.is_quantised for q in quantisers]
    grids = [pool.scale for pool in pools]
    current = {m: (m.weight.data, m.bias) for m in layers}
    for q in quantisers:
        q.is_quantised = False
    for pool in pools:
        pool.scale = torch.empty(0)
    for m, (weight, bias) in layers.items():
        m.weight.data = weight
        m.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
    try:
        yield gm
    finally:
        for q, state in zip(quantisers, states, strict=True):
            q.is_quantised = state
        for pool, grid in zip(pools, grids, strict=True):
            pool.scale = grid
        for m, (weight, bias) in current.items():
            m.weight.data = weight
            m.bias = bias


def capture(gm: fx.GraphModule, modules: Sequence[nn.Module], batches: Sequence
            ) -> dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """Per module: its first input and its output over all ``batches``, concatenated along the batch."""
    seen: dict[nn.Module, tuple[list[torch.Tensor], list[torch.Tensor]]] = {m: ([], []) for m in modules}

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen[module][0].append(args[0].detach())
        seen[module][1].append(output.detach())

    handles = [m.register_forward_hook(hook) for m in modules]
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                gm(*model_inputs(gm, batch))
    finally:
        for handle in handles:
            handle.remove()
        gm.train(was_training)
    return {m: (torch.cat(ins), torch.cat(outs)) for m, (ins, outs) in seen.items()}
