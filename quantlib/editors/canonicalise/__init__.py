"""Canonicalisation: float-equivalent edits that bring any traced model into the form later stages expect.

The canonical graph has only modules for activations, pooling, flattening, tensor additions and concatenations;
every module is called once; no dropout or identity is left; option-A shortcuts are 1x1 convs; every BatchNorm2d
follows a layer it can fold into (else it is a depthwise conv); and (unless asked otherwise) BatchNorms are folded
into their linear ops.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import ComposedEditor, Editor, Rewriter
from quantlib.editors.canonicalise.canonical_modules import CANONICAL_MODULES
from quantlib.editors.canonicalise.explicit_padding import EXPLICIT_PADDING
from quantlib.editors.canonicalise.fold_batchnorm import FoldBatchNorm
from quantlib.editors.canonicalise.fold_shape_constants import FoldShapeConstants
from quantlib.editors.canonicalise.functional_to_modular import FUNCTIONAL_TO_MODULAR
from quantlib.editors.canonicalise.functionalise_inplace import FUNCTIONALISE_INPLACE
from quantlib.editors.canonicalise.lone_batchnorm import LONE_BATCHNORM_TO_CONV
from quantlib.editors.canonicalise.remove_noops import REMOVE_NO_OPS
from quantlib.editors.canonicalise.shortcut_to_conv import SHORTCUT_TO_CONV
from quantlib.editors.canonicalise.split_reused_modules import SPLIT_REUSED_MODULES
from quantlib.graphs.tracing import ensure_shapes, trace


def canonicalisation_editors(fold_batchnorm: bool = True) -> list[Editor]:
    """The canonicalisation pipeline, in order."""
    editors: list[Editor] = [
        FoldShapeConstants(),              # x.size(3), x.shape[2:] -> constants of the example input (never the batch)
        Rewriter(FUNCTIONALISE_INPLACE),   # x.relu_() -> x.relu(): later edits may insert nodes anywhere
        Rewriter(FUNCTIONAL_TO_MODULAR),   # F.relu, x + y, torch.flatten, ... -> modules
        Rewriter(SPLIT_REUSED_MODULES),    # one module per call site
        Rewriter(REMOVE_NO_OPS),           # dropout, identity
        Rewriter(EXPLICIT_PADDING),        # padding="same" / "valid" -> numbers
        Rewriter(CANONICAL_MODULES),       # average pools -> AveragePool2d (exact mean), Hardtanh(0, 6) -> ReLU6
        Rewriter(SHORTCUT_TO_CONV),        # F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)) -> frozen 1x1 stride-2 conv
        Rewriter(LONE_BATCHNORM_TO_CONV),  # a BatchNorm2d with no Conv / Linear to fold into -> depthwise 1x1 conv
    ]
    if fold_batchnorm:
        editors.append(FoldBatchNorm())
    return editors


def canonicalise(model: nn.Module,
                 example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
                 *,
                 fold_batchnorm: bool = True,
                 leaf_modules: Iterable[type[nn.Module] | str] = (),
                 concrete_args: dict[str, Any] | None = None) -> fx.GraphModule:
    """Trace ``model`` and canonicalise it; ``model`` itself is left untouched.

    With ``example_input``, shapes help recognise flattening views and every node of the result carries its
    ``tensor_meta``.
    """
    gm = trace(copy.deepcopy(model), example_input, leaf_modules=leaf_modules, concrete_args=concrete_args)
    gm = ComposedEditor(canonicalisation_editors(fold_batchnorm)).run(gm)  # edits the trace of a copy of the model
    if example_input is not None:
        ensure_shapes(gm, example_input)  # the editors give the nodes they make the shapes of those they replace
    return gm


__all__ = ["CANONICAL_MODULES", "EXPLICIT_PADDING", "FUNCTIONALISE_INPLACE", "FUNCTIONAL_TO_MODULAR",
           "LONE_BATCHNORM_TO_CONV", "REMOVE_NO_OPS", "SHORTCUT_TO_CONV", "SPLIT_REUSED_MODULES", "FoldBatchNorm",
           "FoldShapeConstants", "canonicalisation_editors", "canonicalise"]
