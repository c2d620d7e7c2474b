import json

import pytest
import torch

from quantlib.backends.diana.dory_files import dory_config, golden_text
from quantlib.errors import ExportError


def test_golden_text_is_hwc_with_header_and_trailing_commas():
    values = torch.arange(12.0).reshape(1, 3, 2, 2)  # C=3, H=2, W=2
    text = golden_text("layer3", values)
    lines = text.splitlines()
    assert lines[0] == "# layer3 (shape [3, 2, 2]),"
    # HWC: pixel (0,0) channels 0,1,2 -> values 0, 4, 8; pixel (0,1) -> 1, 5, 9; ...
    assert lines[1:] == ["0,", "4,", "8,", "1,", "5,", "9,", "2,", "6,", "10,", "3,", "7,", "11,"]
    assert text.endswith("11,\n")


def test_golden_values_must_be_one_integer_activation():
    with pytest.raises(ExportError, match=r"Golden values of 'l' are not integers"):
        golden_text("l", torch.full((1, 2, 2), 0.5))
    with pytest.raises(ExportError, match=r"must be one C x H x W activation, got shape \(2, 3\)"):
        golden_text("l", torch.zeros(2, 3))


def test_config_and_a_one_value_golden():
    config = dory_config("net_QL_DORY.onnx", 8, True, 2.0 ** -5)
    assert json.loads(json.dumps(config)) == {
        "onnx_file": "net_QL_DORY.onnx", "BNRelu_bits": 32, "code reserved space": 310000, "n_inputs": 1,
        "input_bits": 8, "input_signed": True, "input_scale": 0.03125}
    assert golden_text("conv", torch.zeros(1, 1, 1)) == "# conv (shape [1, 1, 1]),\n0,\n"


@pytest.mark.parametrize("lo, hi", [(-128, 127), (-2 ** 31, 2 ** 31 - 1)])  # looked up / formatted one by one
def test_golden_lines_are_the_values_as_written_by_str(lo, hi):
    values = torch.tensor([lo, hi, 0, -1, 7, hi], dtype=torch.float64).reshape(3, 2, 1)
    text = golden_text("l", values)
    assert text.splitlines()[1:] == [f"{v}," for v in values.permute(1, 2, 0).reshape(-1).long().tolist()]
    assert text.splitlines()[1:3] == [f"{lo},", "0,"]
