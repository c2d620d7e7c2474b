"""The pipeline's JSON report: the configuration, every quantised tensor's scale as ``2^(-k)`` and the shift that
applies it (``x >> k``: an integer times the scale is its value; ``x << k`` for scales above 1), and the accuracy
measured after each step."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from quantlib.editors.fake2true.requant_parameters import is_power_of_two
from quantlib.pow2.config import TENSOR_TYPES, Pow2Config
from quantlib.pow2.tensors import LayerTensor, layer_tensors
from quantlib.quantizers import exact_log2

STEPS = (("PTQ", "Step 1: PTQ for weight/bias initialization"), ("Weight-Only QAT", "Step 2: Weight-only QAT training"),
         ("Final PTQ", "Step 3: Final PTQ for input/output quantization"))
"""Each step's short name (in ``quantization_type``) and its line in ``pipeline_steps``."""
ACCURACIES = ("initial_accuracy", "ptq_accuracy", "qat_best_accuracy", "final_accuracy")


def power_of_two_text(scale: float) -> tuple[str, str]:
    """``("2^(-9)", "x >> 9")`` for scale 2^-9, ``("2^(3)", "x << 3")`` for 8; ValueError for other scales."""
    exponent = exact_log2(scale)
    return f"2^({exponent})", f"x >> {-exponent}" if exponent <= 0 else f"x << {exponent}"


def tensor_scale(tensor: LayerTensor) -> torch.Tensor:
    """The scale of ``tensor``, one per slice (per output channel for per-channel weights and their biases)."""
    if tensor.kind == "bias":
        return tensor.layer.bias_scale.detach().reshape(-1)
    return tensor.quantiser.scale.detach().reshape(-1)


def tensor_bits(tensor: LayerTensor, config: Pow2Config) -> int:
    """The bit-width ``tensor`` is quantised to."""
    if tensor.kind == "bias":
        return config.bias.bitwidth
    return tensor.quantiser.spec.qrange.bits


def _detail(scales: torch.Tensor, bits: int, per_channel: bool) -> dict[str, Any]:
    """A report entry: lists, one item per channel, for ``per_channel`` tensors (or scales that differ)."""
    values = [float(s) for s in scales]
    texts = [power_of_two_text(v) if is_power_of_two(torch.tensor(v)) else (None, f"x * {v!r}") for v in values]
    pick = (lambda items: items) if per_channel or len(set(values)) > 1 else (lambda items: items[0])
    return {"scale": pick(values), "power_of_2": pick([t[0] for t in texts]),
            "hardware_op": pick([t[1] for t in texts]), "bitwidth": bits}


def quantisation_details(gm: fx.GraphModule, config: Pow2Config) -> dict[str, dict[str, Any]]:
    """``"<layer>.weight" / ".bias" / ".input" / ".output"`` -> scale, power_of_2, hardware_op, bitwidth, for every
    tensor that is quantised (per-channel weights and their biases: a list per field, one item per output channel;
    power_of_2 null for a float scale)."""
    return {t.key: _detail(tensor_scale(t), tensor_bits(t, config), config.per_channel and t.kind in ("weight", "bias"))
            for t in layer_tensors(gm) if t.kind in ("weight", "bias") or t.quantiser.is_quantised}


def build_report(gm: fx.GraphModule, config: Pow2Config, accuracies: dict[str, float], *, trained: bool,
                 final_ptq: bool) -> dict[str, Any]:
    """The report of a finished run that ``trained`` (QAT epochs > 0) and ran the ``final_ptq`` or not;
    ``accuracies`` holds the measured ``ACCURACIES``."""
    steps = [step for step, ran in zip(STEPS, (True, trained, final_ptq), strict=True) if ran]
    return {
        "quantization_type": " -> ".join(name for name, _ in steps) + " Pipeline",
        "pipeline_steps": [line for _, line in steps],
        "config": {kind: config.tensor(kind).as_dict() for kind in TENSOR_TYPES},
        "final_quantization_details": quantisation_details(gm, config),
        **{name: accuracies[name] for name in ACCURACIES},
        "total_improvement": accuracies["final_accuracy"] - accuracies["initial_accuracy"],
    }
