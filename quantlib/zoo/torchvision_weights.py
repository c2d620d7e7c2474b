"""torchvision-format weights for the zoo's ``resnet18``, ``resnet50`` and ``mobilenet_v2``, from a file the user
already has (nothing is downloaded)::

    model = load_torchvision_state_dict(resnet18(), torch.load("resnet18-f37072fd.pth"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from quantlib.zoo.mobilenetv2 import mobilenet_v2, mobilenetv2
from quantlib.zoo.resnet_imagenet import resnet18, resnet50

M = TypeVar("M", bound=nn.Module)

SHOWN = 5
"""How many keys of each kind an error names."""

FACTORIES: dict[str, Callable[..., nn.Module]] = {"resnet18": resnet18, "resnet50": resnet50,
                                                   "mobilenet_v2": mobilenet_v2, "mobilenetv2": mobilenetv2}
"""The zoo factories a state dict is matched against when it does not fit (``mobilenetv2``: the CIFAR-style net)."""

MOBILENET_WIDTHS = (1.0, 0.5, 0.75, 1.3, 1.4)
"""The ``width_mult`` values of ``mobilenet_v2`` tried when naming the factory a file fits."""

_NUM_BATCHES_TRACKED = ".num_batches_tracked"


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict in ``checkpoint``: ``checkpoint["state_dict"]`` when it wraps one, with the ``module.`` prefix
    of ``nn.DataParallel`` / DDP stripped when every key has it. ValueError when it holds anything but tensors."""
    inner = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    if isinstance(inner, Mapping):
        checkpoint = inner
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"Expected a state dict (a mapping of names to tensors), got a {type(checkpoint).__name__}.")
    others = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ValueError(f"Not a state dict: {len(others)} entries are not tensors, e.g. {_names(others)}.")
    prefix = "module."
    if checkpoint and all(str(k).startswith(prefix) for k in checkpoint):
        return {k[len(prefix):]: v for k, v in checkpoint.items()}
    return dict(checkpoint)


def load_torchvision_state_dict(model: M, state_dict: Mapping[str, Any]) -> M:
    """Load a torchvision-format ``state_dict`` into ``model`` key for key (strict) and return ``model``.

    ``state_dict`` may be wrapped as ``{"state_dict": ...}`` and may carry DataParallel's ``module.`` prefix on every
    key; both are removed. BatchNorm ``num_batches_tracked`` counters that old torchvision files lack are kept from
    ``model``. Any other missing or unexpected key or shape mismatch raises a ValueError that names the first few and
    says which zoo factory (and ``num_classes``) the state dict fits.
    """
    given = unwrap_state_dict(state_dict)
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith(_NUM_BATCHES_TRACKED) and key not in given:
            stem = key[:-len(_NUM_BATCHES_TRACKED)]
            if f"{stem}.running_mean" in given:
                given[key] = value.clone()
    problems = _differences(_shapes(expected), _shapes(given))
    if problems:
        raise ValueError(f"The state dict does not fit this {type(model).__name__}: {'; '.join(problems)}. "
                         f"{_fitting_sentence(given)}")
    model.load_state_dict(given, strict=True)
    return model


def fitting_factories(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """The zoo factory calls (e.g. ``resnet18(num_classes=10)``) whose models have exactly ``state_dict``'s keys and
    shapes (``num_batches_tracked`` may be absent); empty when none has."""
    shapes = {k: s for k, s in _shapes(state_dict).items() if not k.endswith(_NUM_BATCHES_TRACKED)}
    head = shapes.get("fc.weight") or shapes.get("classifier.1.weight")
    if head is None or len(head) != 2:
        return []
    num_classes = head[0]
    calls = [("resnet18", {}), ("resnet50", {}), *(("mobilenet_v2", {"width_mult": w}) for w in MOBILENET_WIDTHS),
             ("mobilenetv2", {})]
    fits = []
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # no memory, no change to the caller's RNG
        for name, kwargs in calls:
            candidate = _shapes(FACTORIES[name](num_classes=num_classes, **kwargs).state_dict())
            candidate = {k: s for k, s in candidate.items() if not k.endswith(_NUM_BATCHES_TRACKED)}
            if candidate == shapes:
                arguments = ", ".join(f"{k}={v}" for k, v in {"num_classes": num_classes, **kwargs}.items())
                fits.append(f"{name}({arguments})")
    return fits


def _fitting_sentence(state_dict: Mapping[str, torch.Tensor]) -> str:
    fits = fitting_factories(state_dict)
    if fits:
        return f"It fits quantlib.zoo.{' and quantlib.zoo.'.join(fits)}."
    return (f"It fits none of the zoo's {', '.join(FACTORIES)}: it is not a torchvision ResNet-18, ResNet-50 or "
            f"MobileNetV2 state dict.")


def _shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state_dict.items()}


def _differences(expected: dict[str, list[int]], given: dict[str, list[int]]) -> list[str]:
    """Human-readable missing keys, unexpected keys and shape mismatches (the first few of each)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [f"{k} {given[k]} in the state dict, {expected[k]} in the model"
                  for k in expected if k in given and given[k] != expected[k]]
    problems = []
    for what, items, sep in (("missing keys", missing, ", "), ("unexpected keys", unexpected, ", "),
                             ("shape mismatches", mismatched, " / ")):
        if items:
            problems.append(f"{what} ({len(items)}): {_names(items, sep)}")
    return problems


def _names(items: list[str], sep: str = ", ") -> str:
    shown = sep.join(items[:SHOWN])
    return shown if len(items) <= SHOWN else f"{shown}{sep}... ({len(items) - SHOWN} more)"
