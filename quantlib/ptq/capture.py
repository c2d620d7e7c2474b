"""Layer inputs and outputs recorded once from calibration data, so that reconstruction never re-runs the network
per step; and the model's float twin (every quantiser switched off) that gives the targets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.fx as fx
from torch import nn

from quantlib.calibration import model_inputs
from quantlib.modules.average_pool import AveragePool2d
from quantlib.modules.qmodule import QModule


@contextmanager
def float_mode(gm: fx.GraphModule) -> Iterator[fx.GraphModule]:
    """``gm`` with every quantiser off and every average pool plain (not floored on its input's grid): the float
    model, BatchNorm folded; restored on exit."""
    quantisers = [m for m in gm.modules() if isinstance(m, QModule)]
    pools = [m for m in gm.modules() if isinstance(m, AveragePool2d)]
    states = [q.is_quantised for q in quantisers]
    grids = [pool.scale for pool in pools]
    for q in quantisers:
        q.is_quantised = False
    for pool in pools:
        pool.scale = torch.empty(0)
    try:
        yield gm
    finally:
        for q, state in zip(quantisers, states, strict=True):
            q.is_quantised = state
        for pool, grid in zip(pools, grids, strict=True):
            pool.scale = grid


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
