"""The built-in quantisation ops of quantised modules, registered by name (see ``QModule.register_qop``).

- ``floor``: DIANA's quantiser, ``eps * floor(clip(x / eps, lo, hi))``; clipping bounds fixed by calibration.
- ``pact``: the same forward, with PACT gradients that learn the clipping bounds.
- ``round``: ``eps * clip(round(x / eps), lo, hi)``; bounds fixed.
- ``ternary`` / ``binary``: weights in {-eps, 0, eps} / {-eps, eps}.
- ``lsq``: ``eps * round(clip(x / eps, lo, hi))`` with LSQ's gradients (Esser et al. 2020) that learn the scale;
  ranges with a fixed offset.
- ``tqt``: TQT (Jain et al. 2020): the scale is the power of two at or above ``eps``, learned in the log2 domain;
  full signed or unsigned ranges (2^b levels).
- ``dorefa``: DoReFa weights (Zhou et al. 2016), ``2 * round_k(tanh(w) / (2 max|tanh(w)|) + 0.5) - 1`` with k the
  range's bits; the module's scale plays no part, and the levels ``2i / (2^k - 1) - 1`` have no zero, so such
  weights train and evaluate but are not integerised. (DoReFa's activations, ``round_k(clamp(x, 0, 1))``, are the
  ``round`` qop on an unsigned range calibrated to [0, 1] with ``init: const``.)
"""

from __future__ import annotations

import torch

from quantlib.modules.qmodule import QModule
from quantlib.quantizers import (
    binary_quantize,
    dorefa_weights,
    floor_quantize,
    lsq_grad_scale,
    lsq_quantize,
    pact_quantize,
    round_quantize,
    ternary_quantize,
    tqt_quantize,
)


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


def _fixed_offset(m: QModule, qop: str) -> tuple[int, int]:
    qrange = m.spec.qrange
    if qrange.offset is None:
        raise ValueError(f"Quantiser '{m.qualname}': qop {qop!r} needs a range with a fixed offset (signed or "
                         f"unsigned), got a learned offset.")
    return qrange.min, qrange.max


def _lsq(m: QModule, x: torch.Tensor) -> torch.Tensor:
    lo, hi = _fixed_offset(m, "lsq")
    grad_scale = lsq_grad_scale(max(1, x.numel() // m.scale.numel()), max(hi, 1))
    return lsq_quantize(x, m.scale, -lo, hi, grad_scale)


def _tqt(m: QModule, x: torch.Tensor) -> torch.Tensor:
    lo, hi = _fixed_offset(m, "tqt")
    bits = (hi - lo + 1).bit_length() - 1
    signed = lo < 0
    if hi - lo + 1 != 2 ** bits or (signed and lo != -(2 ** (bits - 1))) or (not signed and lo != 0):
        raise ValueError(f"Quantiser '{m.qualname}': qop 'tqt' needs a full {bits}-bit range, got [{lo}, {hi}].")
    log2_t = torch.log2(m.scale * 2.0 ** (bits - 1 if signed else bits))  # the threshold whose grid is pow2(eps)
    return tqt_quantize(x, log2_t, bits, signed)


def _dorefa(m: QModule, x: torch.Tensor) -> torch.Tensor:
    return dorefa_weights(x, (m.n_levels - 1).bit_length())


QOPS = {"floor": _floor, "pact": _pact, "round": _round, "ternary": _ternary, "binary": _binary, "lsq": _lsq,
        "tqt": _tqt, "dorefa": _dorefa}
ROUNDING_TO_NEAREST = ("round", "lsq", "tqt")
for _name, _qop in QOPS.items():
    QModule.register_qop(_name, _qop, rounds_to_nearest=_name in ROUNDING_TO_NEAREST)
