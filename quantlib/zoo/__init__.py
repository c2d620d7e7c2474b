"""The test zoo: reference models that tests, benchmarks and examples share (built here; no torchvision).

``resnet18``, ``resnet50`` and ``mobilenet_v2`` have torchvision's layout: ``load_torchvision_state_dict`` loads
torchvision-format weights into them key for key (``mobilenetv2`` is a smaller CIFAR-style net).

``ZOO`` maps a name to its factory and the input shape (batch excluded) it is exercised with (every one has an
integer form). ``ARCHITECTURES`` names every factory, those too that train but do not integerise (the 1-D ResNets,
whose Conv1d has no integer form here); ``quantlib train`` builds from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from quantlib.registry import Registry
from quantlib.zoo.control_flow_net import control_flow_net
from quantlib.zoo.digits_cnn import digits_cnn
from quantlib.zoo.ds_cnn import ds_cnn
from quantlib.zoo.functional_net import functional_net
from quantlib.zoo.mobilenet_diana import mobilenet_diana
from quantlib.zoo.mobilenetv2 import mobilenet_v2, mobilenetv2
from quantlib.zoo.resnet1d import resnet1d10, resnet1d18
from quantlib.zoo.resnet8_mlperf import resnet8_mlperf
from quantlib.zoo.resnet_cifar import resnet8, resnet20, resnet110
from quantlib.zoo.resnet_imagenet import resnet18, resnet34, resnet50
from quantlib.zoo.torchvision_weights import load_torchvision_state_dict
from quantlib.zoo.vgg import vgg11


@dataclass(frozen=True)
class ZooEntry:
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]


ZOO: dict[str, ZooEntry] = {
    "resnet8": ZooEntry(resnet8, (3, 32, 32)),
    "resnet8_mlperf": ZooEntry(resnet8_mlperf, (3, 32, 32)),
    "ds_cnn": ZooEntry(ds_cnn, (1, 49, 10)),
    "resnet20": ZooEntry(resnet20, (3, 32, 32)),
    "resnet110": ZooEntry(resnet110, (3, 32, 32)),
    "resnet18": ZooEntry(resnet18, (3, 64, 64)),
    "resnet50": ZooEntry(resnet50, (3, 64, 64)),
    "mobilenetv2": ZooEntry(mobilenetv2, (3, 32, 32)),
    "mobilenet_diana": ZooEntry(mobilenet_diana, (3, 32, 32)),
    "vgg11": ZooEntry(vgg11, (3, 32, 32)),
    "functional_net": ZooEntry(functional_net, (3, 32, 32)),
    "digits_cnn": ZooEntry(digits_cnn, (1, 8, 8)),
}
"""Every traceable zoo model. ``control_flow_net`` is kept apart: it is the model that must fail to trace."""


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (fresh ones are identities); returns model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(c, generator=g))
                    m.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model


ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("model", {
    **{name: entry.factory for name, entry in ZOO.items()},
    "resnet34": resnet34, "resnet1d10": resnet1d10, "resnet1d18": resnet1d18, "mobilenet_v2": mobilenet_v2,
})
"""Every model factory of the zoo by name (keyword arguments such as ``num_classes`` go to the factory); a user
registers their own with ``ARCHITECTURES.register(name, factory)``."""


def build(name: str, seed: int = 0) -> nn.Module:
    """Zoo model ``name`` in eval mode, with weights from ``seed`` and randomised BatchNorms."""
    torch.manual_seed(seed)
    return randomise_batchnorm(ZOO[name].factory(), seed).eval()


__all__ = ["ARCHITECTURES", "ZOO", "ZooEntry", "build", "control_flow_net", "digits_cnn", "ds_cnn", "functional_net",
           "load_torchvision_state_dict", "mobilenet_diana", "mobilenet_v2", "mobilenetv2", "randomise_batchnorm",
           "resnet1d10", "resnet1d18", "resnet8", "resnet8_mlperf", "resnet18", "resnet20", "resnet34", "resnet50",
           "resnet110", "vgg11"]
