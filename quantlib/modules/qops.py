"""The built-in quantisation ops of quantised modules, registered by name (see ``QModule.register_qop``).

- ``floor``: DIANA's quantiser, ``eps * floor(clip(x / eps, lo, hi))``; clipping bounds fixed by calibration.
- ``pact``: the same forward, with PACT gradients that learn the clipping bounds.
- ``round``: ``eps * clip(round(x / eps), lo, hi)``; bounds fixed.
- ``ternary`` / ``binary``: weights in {-eps, 0, eps} / {-eps, eps}.
"""

from __future__ import annotations

import torch

from quantlib.modules.qmodule import QModule
from quantlib.quantizers import binary_quantize, floor_quantize, pact_quantize, round_quantize, ternary_quantize


def _integer_bounds(m: QModule) -> tuple[int | torch.Tensor, int | torch.Tensor]:
    qrange = m.spec.qrange
    if qrange.offset is not None:
        return qrange.min, qrange.max
    return m.zero, m.zero + (m.n_levels - 1)


def _floor(m: QModule, x: torch.Tensor) -> torch.Tensor:
    return floor_quantize(x, m.scale.detach(), *_integer_bounds(m))


def _pact(m: QModule, x: torch.Tensor) -> torch.Tensor:
    return pact_quantize(x, m.lower, m.clip_hi, m.n_levels)


def _round(m: QModule, x: torch.Tensor) -> torch.Tensor:
    return round_quantize(x, m.scale.detach(), *_integer_bounds(m))


def _ternary(m: QModule, x: torch.Tensor) -> torch.Tensor:
    return ternary_quantize(x, m.scale.detach())


def _binary(m: QModule, x: torch.Tensor) -> torch.Tensor:
    return binary_quantize(x, m.scale.detach())


for _name, _qop in {"floor": _floor, "pact": _pact, "round": _round, "ternary": _ternary, "binary": _binary}.items():
    QModule.register_qop(_name, _qop)
