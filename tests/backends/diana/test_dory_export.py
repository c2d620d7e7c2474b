"""The DORY builder's guards (the whole export is tested end to end in tests/e2e)."""

import numpy as np
import pytest

from quantlib.backends.diana.dory_export import DoryBuilder
from quantlib.errors import ExportError


def test_initializers_must_be_exact_in_float32():
    b = DoryBuilder()
    assert b.init("layer0_weight", np.array([2.0 ** 24, -1.0]), "conv1") == "layer0_weight"
    with pytest.raises(ExportError, match=r"Layer 'head': its requant_add reaches 33554432, beyond 2\^24"):
        b.init("layer3_requant_add", np.array([2.0 ** 25]), "head")


def test_every_node_output_is_the_next_decimal_name():
    b = DoryBuilder()
    assert [b.op("Floor", ["0"]), b.op("Floor", ["1"]), b.op("Constant", [])] == ["1", "2", "3"]
