"""Property: every random DIANA-legal net (quantlib/zoo/random_diana_net.py) goes through the whole DIANA flow, with
both analog policies, and the hardware-mapped fake-quantised model, the exact and integer models, onnxruntime on the
twin and the DORY file itself (interpreted) agree at every layer. The only errors allowed are named hardware-rule
findings for rules the net truly breaks."""

import tempfile

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from quantlib.backends.diana.fidelity import diana_fidelity
from quantlib.zoo.random_diana_net import random_case

RULES_A_LEGAL_NET_CAN_BREAK = ("shift-range", "requant-multiplier", "affine-range")
"""Rules of scales, not of structure: a shift beyond 31, a left shift, or an analog BatchNorm whose post-ADC multiplier
needs more than 8 bits; the calibrated scales and random BatchNorms of a random net can ask for any of them."""


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_random_diana_legal_nets_are_exact_at_every_layer_with_both_policies(seed):
    spec, model, calibration, x = random_case(seed)
    note(repr(spec))
    for analog in ("none", "auto"):
        with tempfile.TemporaryDirectory() as out:
            fidelity = diana_fidelity(model, calibration, x, analog, f"{out}/export")
        note(f"{analog}: {fidelity}")
        assert fidelity.hardware_layers >= 2 and fidelity.elements > 0
        assert fidelity.mismatches == {"fake_vs_exact": 0, "exact_vs_integer": 0, "integer_vs_twin": 0,
                                       "integer_vs_dory": 0}
        assert [e for e in fidelity.errors if not any(f"[{rule}]" in e for rule in RULES_A_LEGAL_NET_CAN_BREAK)] == []
