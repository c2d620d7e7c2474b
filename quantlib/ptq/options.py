"""What every post-training quantisation method shares: bit-widths, granularity, the 8-bit head and stem, and whether
scales are DIANA's powers of two with floor rounding."""

from __future__ import annotations

from dataclasses import dataclass

from quantlib.layer_overrides import Overrides

MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class PTQOptions:
    """``w_bits`` / ``a_bits``: weight and activation bits (2..8); ``per_channel``: one weight scale per output
    channel; ``keep_head_stem_8bit``: the first and the last linear layer, the network input and the last layer's
    input stay at 8 bits; ``pow2``: power-of-two scales and floor-rounded activations (DIANA's numbers, integer-exact
    through ``quantlib.ptq.deploy``), else float scales and activations rounded half up; ``symmetric``: weights and
    signed activations on grids symmetric about zero, else on grids with a learned zero point (ReLU outputs start at
    zero either way); ``overrides``: per-layer
    settings (``quantlib.layer_overrides``), which win over these and over the 8-bit head and stem."""

    w_bits: int = 4
    a_bits: int = 4
    per_channel: bool = True
    keep_head_stem_8bit: bool = True
    pow2: bool = False
    symmetric: bool = True
    overrides: Overrides | None = None

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not MIN_BITS <= value <= MAX_BITS:
                raise ValueError(f"PTQ option {name}={value!r} is not allowed: give an integer from {MIN_BITS} to "
                                 f"{MAX_BITS}.")
        for name in ("per_channel", "keep_head_stem_8bit", "pow2", "symmetric"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"PTQ option {name}={getattr(self, name)!r} must be True or False.")
