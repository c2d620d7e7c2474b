"""DIANA's hardware rules (docs/hardware-rules.md), checked per layer. Each broken rule is one Finding naming the
layer, the rule and the fix, so that a user can answer "why did layer X not go to the analog core?" from the report
alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

Core = Literal["analog", "digital"]
Severity = Literal["error", "warning"]

KERNEL_SIZES = (1, 3, 5, 7)
STRIDES = (1, 2)
SHIFT_RANGE = (0, 31)
CHANNEL_MULTIPLE = 4


@dataclass(frozen=True)
class Finding:
    """One broken rule of one layer; ``suggestion``: the layer's constructor arguments that the fix sets (all of a
    layer's suggestions together make it legal)."""

    layer: str
    rule: str
    message: str
    fix: str
    severity: Severity = "error"
    suggestion: Mapping[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.layer}: [{self.rule}] {self.message} Fix: {self.fix}"


def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    """A kernel / stride / padding / dilation argument as a pair."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def legal_kernel(kh: int, kw: int) -> int:
    """The legal kernel size closest to the larger side of a kh x kw kernel (ties: the larger)."""
    return min(KERNEL_SIZES, key=lambda k: (abs(k - max(kh, kw)), -k))


def conv_findings(layer: str, conv: nn.Conv2d, core: Core) -> list[Finding]:
    """Every DIANA rule that ``conv`` breaks on ``core``."""
    findings = []
    kh, kw = pair(conv.kernel_size)
    k = legal_kernel(kh, kw)
    if k != kh or k != kw:
        findings.append(Finding(layer, "kernel-size", f"kernel {kh}x{kw} is not one of 1x1, 3x3, 5x5, 7x7.",
                                f"use a square kernel of size 1, 3, 5 or 7 (the closest: kernel_size={k}).",
                                suggestion={"kernel_size": k}))
    stride = pair(conv.stride)
    if stride[0] != stride[1] or stride[0] not in STRIDES:
        legal = 1 if max(stride) == 1 else 2
        findings.append(Finding(layer, "stride", f"stride {stride} is not 1 or 2.",
                                f"use stride={legal} (a larger stride: stride 2 and a pooling layer).",
                                suggestion={"stride": legal}))
    if pair(conv.dilation) != (1, 1):
        findings.append(Finding(layer, "dilation", f"dilation {pair(conv.dilation)} is not 1.",
                                "use dilation=1 (a larger kernel covers the same field).", suggestion={"dilation": 1}))
    padding = conv.padding
    same = (k // 2, k // 2)  # with the legal kernel and dilation 1: output size = ceil(input size / stride)
    if isinstance(padding, str) or pair(padding) != same or conv.padding_mode != "zeros":
        changes = [f"the {k}x{k} kernel"] if (kh, kw) != (k, k) else []
        changes += ["dilation 1"] if pair(conv.dilation) != (1, 1) else []
        after = f" for {' and '.join(changes)}" if changes else ""
        findings.append(Finding(layer, "padding", f"padding {padding!r} ({conv.padding_mode}) is not the symmetric "
                                f"'same' zero padding{after}, {same}.", f"use padding={k // 2} with zeros{after}.",
                                suggestion={"padding": k // 2, "padding_mode": "zeros"}))
    if core == "analog" and conv.groups != 1:
        findings.append(Finding(layer, "analog-groups", f"groups={conv.groups}: the analog core computes only dense "
                                f"convolutions.", "keep this layer digital, or use groups=1.",
                                suggestion={"groups": 1}))
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    if core == "digital" and conv.groups != 1 and not depthwise:
        findings.append(Finding(layer, "digital-groups", f"groups={conv.groups} is neither 1 nor depthwise "
                                f"(groups = in = out channels = {conv.in_channels}).",
                                "use groups=1 or a depthwise convolution.", suggestion={"groups": 1}))
    findings += channel_findings(layer, conv.in_channels, conv.out_channels)
    return findings


def linear_findings(layer: str, linear: nn.Linear) -> list[Finding]:
    """Every DIANA rule that ``linear`` (always digital) breaks."""
    return channel_findings(layer, linear.in_features, linear.out_features)


def channel_findings(layer: str, n_in: int, n_out: int) -> list[Finding]:
    """Channel counts not divisible by 4: the tools downstream pad them, so this is a warning."""
    odd = [f"{what} {n}" for what, n in (("input channels", n_in), ("output channels", n_out))
           if n % CHANNEL_MULTIPLE]
    if not odd:
        return []
    return [Finding(layer, "channels-multiple-of-4", f"{' and '.join(odd)} not divisible by {CHANNEL_MULTIPLE}.",
                    "DORY pads the channels (memory and cycles are wasted); use multiples of 4 where you can.",
                    "warning")]


def shift_findings(layer: str, shift: int) -> list[Finding]:
    """The requantisation shift must lie in [0, 31]."""
    lo, hi = SHIFT_RANGE
    if lo <= shift <= hi:
        return []
    return [Finding(layer, "shift-range", f"requantisation shift {shift} is outside [{lo}, {hi}].",
                    "retrain with the power-of-two stage, or rescale the layer's output quantiser.")]


def adc_findings(layer: str, adc_mul: torch.Tensor) -> list[Finding]:
    """The ADC divides its tile sums by a power of two; it cannot multiply them."""
    if bool((adc_mul == 1).all()):
        return []
    return [Finding(layer, "adc-shift", f"the ADC would have to multiply its sums by {adc_mul.flatten().tolist()}: "
                    f"its scale is finer than input scale x weight scale.",
                    "recalibrate the ADC (map_scales) so that its scale is at least input scale x weight scale.")]


def multiplier_findings(layer: str, kind: str, mul: torch.Tensor) -> list[Finding]:
    """DIANA's digital core and its adds end with a shift and a clip: no multiplier."""
    if bool((mul == 1).all()):
        return []
    what = "add's output" if kind == "add" else "layer's output"
    return [Finding(layer, "requant-multiplier", f"the {what} requantisation multiplies by {integer_values(mul)}: "
                    f"its output scale is finer than its input's (a left shift), or it differs per channel; DIANA "
                    f"only shifts right.", "give the output quantiser a scale no finer than input scale x weight "
                    "scale, and use per-tensor weight scales on digital layers.")]


def affine_findings(layer: str, mul: torch.Tensor) -> list[Finding]:
    """The analog BatchNorm's affine after the ADC runs on 8 bits: its multiplier in [-128, 127] (its add is the
    32-bit requant add)."""
    if bool(((mul >= -128) & (mul <= 127)).all()):
        return []
    return [Finding(layer, "affine-range", f"the post-ADC multiplier reaches {int(mul.abs().max())}, beyond 8 bits.",
                    "lower the output scale's resolution, or keep the layer digital.")]


def add_input_findings(layer: str, input_requants: list[tuple[int, torch.nn.Module]]) -> list[Finding]:
    """DIANA's add reads two tensors of one scale: every input requantisation left is a broken rule."""
    return [Finding(layer, "add-input-scale", f"input {i} must be requantised first (x {integer_values(rq.mul)} / 2^"
                    f"{rq.shift}, clip [{rq.lo}, {rq.hi}]): DIANA's add has no per-input multiplier.",
                    "let harmonise_scales tie both inputs to one scale (calibrate and clip_scales_pow2 do); an input "
                    "tied to two adds of other scales cannot be: requantise it with a conv first.")
            for i, rq in input_requants]


def integer_values(t: torch.Tensor) -> int | list[int]:
    """The integers of ``t`` as one int when they are all equal, else as a list (for messages and reports)."""
    v = t.detach().double().reshape(-1).long().tolist()
    return v[0] if len(set(v)) == 1 else v


def analog_eligibility(layer: str, module: nn.Module) -> list[Finding]:
    """Why ``module`` cannot run on the analog core (empty: it can)."""
    if not isinstance(module, nn.Conv2d):
        return [Finding(layer, "analog-op", f"{type(module).__name__} layers run on the digital core only.",
                        "keep it digital.")]
    return [f for f in conv_findings(layer, module, "analog") if f.severity == "error"]


def analog_input_findings(layer: str, reader_of: str) -> list[Finding]:
    """The analog core reads 7-bit unsigned activations: the layer's input must come from a ReLU."""
    return [Finding(layer, "analog-input", f"reads '{reader_of}', which may be negative; the analog core takes 7-bit "
                    f"unsigned inputs (0..127).", "keep it digital, or put a ReLU before it.")]
