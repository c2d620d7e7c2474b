"""Buffers whose shape is only known once a stage sets them (an empty tensor until then): loading a state dict of a
later stage resizes them first, so that ``load_state_dict`` copies the saved values instead of refusing them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


def resize_buffers_to_saved(module: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str,
                            names: Iterable[str]) -> None:
    """Give each buffer in ``names`` the shape it has in ``state_dict`` (call from ``_load_from_state_dict``)."""
    for name in names:
        saved = state_dict.get(prefix + name)
        if saved is not None and saved.shape != getattr(module, name).shape:
            setattr(module, name, torch.zeros_like(saved))
