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

from quantlib.editors.base import ComposedEditor, Editor
from quantlib.editors.canonicalise.canonical_modules import CanonicalModules
from quantlib.editors.canonicalise.explicit_padding import ExplicitPadding
from quantlib.editors.canonicalise.fold_batchnorm import FoldBatchNorm
from quantlib.editors.canonicalise.fold_shape_constants import FoldShapeConstants
from quantlib.editors.canonicalise.functional_to_modular import FunctionalToModular
from quantlib.editors.canonicalise.functionalise_inplace import FunctionaliseInplace
from quantlib.editors.canonicalise.lone_batchnorm import LoneBatchNormToConv
from quantlib.editors.canonicalise.remove_noops import RemoveNoOps
from quantlib.editors.canonicalise.shortcut_to_conv import ShortcutToConv
from quantlib.editors.canonicalise.split_reused_modules import SplitReusedModules
from quantlib.graphs.tracing import ensure_shapes, trace


def canonicalisation_editors(fold_batchnorm: bool = True) -> list[Editor]:
    """The canonicalisation pipeline, in order."""
    editors: list[Editor] = [
        FoldShapeConstants(),     # x.size(3), x.shape[2:] -> constants of the example input (never the batch)
        FunctionaliseInplace(),   # x.relu_() -> x.relu(): later edits may insert nodes anywhere
        FunctionalToModular(),    # F.relu, x + y, torch.flatten, ... -> modules
        SplitReusedModules(),     # one module per call site
        RemoveNoOps(),            # dropout, identity
        ExplicitPadding(),        # padding="same" / "valid" -> numbers
        CanonicalModules(),       # average pools -> AveragePool2d (exact mean), Hardtanh(0, 6) -> ReLU6
        ShortcutToConv(),         # F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)) -> frozen 1x1 stride-2 conv
        LoneBatchNormToConv(),    # a BatchNorm2d with no Conv / Linear to fold into -> depthwise 1x1 conv
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


__all__ = ["CanonicalModules", "ExplicitPadding", "FoldBatchNorm", "FoldShapeConstants", "FunctionalToModular",
           "FunctionaliseInplace", "LoneBatchNormToConv", "RemoveNoOps", "ShortcutToConv", "SplitReusedModules",
           "canonicalisation_editors", "canonicalise"]
