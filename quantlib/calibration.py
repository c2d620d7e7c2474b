"""Calibration: run data through a fake-quantised model with observers on, then initialise every quantiser."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
import torch.fx as fx
from torch import nn
from tqdm import tqdm

from quantlib.editors.base import Editor
from quantlib.errors import EditorError
from quantlib.modules.qmodule import QModule
from quantlib.scale_ties import harmonise_scales

logger = logging.getLogger(__name__)


def model_inputs(model: nn.Module, batch: torch.Tensor | tuple | list) -> tuple:
    """The model's positional inputs in ``batch``: a tensor; or, from a tuple / list, as many leading elements as the
    model takes (a GraphModule's placeholders; one for other modules), so that (input, target) pairs work too."""
    if not isinstance(batch, (tuple, list)):
        return (batch,)
    n_inputs = sum(n.op == "placeholder" for n in model.graph.nodes) if isinstance(model, fx.GraphModule) else 1
    return tuple(batch[:n_inputs])


def calibrate(model: nn.Module, batches: Iterable, *, progress: bool = False,
              quantisers: Iterable[QModule] | None = None) -> nn.Module:
    """Observe ``batches`` (tensors, or tuples such as (input, target); see ``model_inputs``) in eval mode,
    initialise every quantiser (or only ``quantisers``; the others keep their state) from what it saw, tie the
    scales of adds and pools of a GraphModule (``harmonise_scales``); returns ``model``, now fake-quantised."""
    if quantisers is None:
        quantisers = [m for m in model.modules() if isinstance(m, QModule)]
    quantisers = list(quantisers)
    for q in quantisers:
        q.is_quantised = False
        q.start_observing()
    was_training = model.training
    model.eval()
    n = 0
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc="calibrating", disable=not progress, leave=False):
                model(*model_inputs(model, batch))
                n += 1
    finally:
        for q in quantisers:
            q.stop_observing()
        model.train(was_training)
    for q in quantisers:
        q.init_qhparams()
    if isinstance(model, fx.GraphModule):
        harmonise_scales(model)
    logger.info("Calibrated %d quantisers on %d batches.", len(quantisers), n)
    return model


class Calibrate(Editor):
    """``calibrate`` as an editor (in place): every quantiser of ``quantisers(gm)`` (default: all) is initialised
    from ``batches``."""

    def __init__(self, batches: Iterable, quantisers: Callable[[fx.GraphModule], list[QModule]] | None = None,
                 progress: bool = False) -> None:
        self.batches, self.quantisers, self.progress = batches, quantisers, progress

    runs_forward = True

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        chosen = None if self.quantisers is None else self.quantisers(gm)
        return calibrate(gm, self.batches, progress=self.progress, quantisers=chosen)

    def ensures(self, gm: fx.GraphModule) -> None:
        chosen = self.quantisers(gm) if self.quantisers is not None else \
            [m for m in gm.modules() if isinstance(m, QModule)]
        left = [q.qualname or type(q).__name__ for q in chosen if not q.is_quantised]
        if left:
            raise EditorError(f"Calibration left quantisers {left} uninitialised: the batches reached none of them.")
