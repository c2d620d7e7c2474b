"""The per-layer report of a DIANA model: core, geometry, bits, every scale as a power of two, the requantisation,
and the hardware rules each layer breaks. Before hardware mapping it holds the layers' cores and findings only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from quantlib.backends.diana.core_choice import CoreChoice, layer_nodes
from quantlib.backends.diana.dory_limits import dory_findings
from quantlib.backends.diana.hardware_layers import (
    HardwareLayer,
    hardware_layers,
    range_bits,
    requant_mul_add,
)
from quantlib.backends.diana.hardware_rules import (
    Finding,
    adc_findings,
    add_input_findings,
    integer_values,
    multiplier_findings,
    pair,
    shift_findings,
)
from quantlib.editors.fake2true.requantiser import source_requant
from quantlib.modules.true_quant import Requant


@dataclass(frozen=True)
class LayerReport:
    """One row of the report; scales are exponents k of 2^k, shifts are right shifts ("x >> shift")."""

    layer: str
    kind: str
    core: str
    kernel: list[int] | None = None
    stride: list[int] | None = None
    bits: dict[str, int] = field(default_factory=dict)
    scales: dict[str, int] = field(default_factory=dict)
    requant: dict[str, object] = field(default_factory=dict)
    findings: list[dict[str, str]] = field(default_factory=list)


def _finding(f: Finding) -> dict[str, str]:
    return {"rule": f.rule, "severity": f.severity, "message": f.message, "fix": f.fix}


def _exponent(scale: torch.Tensor) -> int | list[int]:
    k = torch.log2(scale.detach().double().reshape(-1)).round().long().tolist()
    return k[0] if len(set(k)) == 1 else k


def layer_reports(fake: fx.GraphModule, exact: fx.GraphModule | None, choice: CoreChoice) -> list[LayerReport]:
    """The report of a DIANA model: from its exact graph once hardware-mapped, else from ``fake``'s layers."""
    if exact is None:
        modules = dict(fake.named_modules())
        return [LayerReport(name, "conv" if isinstance(modules[name], nn.Conv2d) else "linear", choice.cores[name],
                            **_geometry(modules[name]), findings=[_finding(f) for f in choice.findings[name]])
                for name in layer_nodes(fake) if name in choice.cores]
    modules = dict(exact.named_modules())
    fake_modules = dict(fake.named_modules())
    return [_mapped_row(layer, modules, fake_modules, choice) for layer in hardware_layers(exact).layers]


def _geometry(module: nn.Module) -> dict[str, list[int]]:
    """Kernel and stride of a conv or pool (a true-quantised conv's kernel is its weight's shape)."""
    if getattr(module, "stride", None) is None:
        return {}
    kernel = getattr(module, "kernel_size", None) or (module.weight.shape[2:] if hasattr(module, "weight") else None)
    return {"kernel": list(pair(kernel)) if kernel is not None else None, "stride": list(pair(module.stride))}


def _mapped_row(layer: HardwareLayer, modules: dict, fake_modules: dict, choice: CoreChoice) -> LayerReport:
    """A layer's row from the exact graph (and, for the ternary weight scale the integer op folds away and the
    calibration of its quantisers, the fake one)."""
    op = modules[layer.op.target]
    core = choice.cores.get(layer.name, "digital")
    findings = [_finding(f) for f in choice.findings.get(layer.name, [])]
    row = LayerReport(layer.name, layer.kind, core, **_geometry(op), findings=findings)
    if layer.requant is None:  # a max pool
        return dataclasses.replace(row, findings=findings + [_finding(f) for f in dory_findings(layer, None, None)])
    rq: Requant = modules[layer.requant.target]
    bits = {"output": range_bits(rq.lo, rq.hi)}
    scales = {"output": _exponent(rq.eps_out)}
    source = source_requant(layer.inputs[0], modules)
    if source is not None:
        bits["input"] = range_bits(source.lo, source.hi)
        scales["input"] = _exponent(source.eps_out)
    if layer.kind in ("conv", "linear"):
        bits["weights"] = 8
        scales["weights"] = _exponent(op.eps_w)
    elif layer.kind == "analog_conv":
        bits.update(weights=2, adc=6)
        scales.update(weights=_exponent(fake_modules[layer.name].scale), adc=_exponent(op.eps_out))
    channels = layer.op.meta["tensor_meta"].shape[1] if "tensor_meta" in layer.op.meta else rq.mul.numel()
    mul, add = requant_mul_add(op, rq, channels)
    requant = {"mul": integer_values(mul), "add": integer_values(add), "shift": rq.shift, "clip": [rq.lo, rq.hi]}
    if layer.kind == "analog_conv":
        requant["adc_shift"] = op.adc_shift
        findings += [_finding(f) for f in shift_findings(layer.name, op.adc_shift)]
        findings += [_finding(f) for f in adc_findings(layer.name, op.adc_mul)]
        findings += _affine_findings(layer.name, rq)
    if layer.kind in ("conv", "linear", "add"):
        findings += [_finding(f) for f in multiplier_findings(layer.name, layer.kind, rq.mul)]
    if layer.kind == "add":
        findings += [_finding(f) for f in add_input_findings(layer.name, [
            (i, modules[n.target]) for i, n in enumerate(layer.input_requants) if n is not None])]
    findings += [_finding(f) for f in shift_findings(layer.name, rq.shift)]
    findings += [_finding(f) for f in _calibration_findings(layer, fake_modules)]
    in_channels = _channels_of(layer.inputs[0])
    findings += [_finding(f) for f in dory_findings(layer, rq, in_channels)]
    return dataclasses.replace(row, bits=bits, scales=scales, requant=requant, findings=findings)


def _channels_of(node: fx.Node) -> int | None:
    meta = node.meta.get("tensor_meta")
    return int(meta.shape[1]) if meta is not None and len(meta.shape) > 1 else None


def _calibration_findings(layer: HardwareLayer, fake_modules: dict) -> list[Finding]:
    """A quantiser of the layer (its output's, an add's output, an ADC) that saw only zeros in calibration."""
    names = [layer.requant.target, f"{layer.name}.output_quantiser", f"{layer.name}.adc"]
    zeros = [n for n in names if getattr(fake_modules.get(n), "calibrated_on_zeros", False)]
    if not zeros:
        return []
    return [Finding(layer.name, "degenerate-calibration", f"quantiser(s) {zeros} saw only zeros in calibration: "
                    f"their scale was set to 1, and this layer's scales, shifts and findings come from degenerate "
                    f"calibration data.", "calibrate on inputs that reach this layer (representative data, enough "
                    "batches).", "warning")]


def _affine_findings(layer: str, rq: Requant) -> list[dict[str, str]]:
    """The analog BatchNorm's affine runs on 8 bits: mul in [-128, 127] (add is the 32-bit requant add)."""
    if bool(((rq.mul >= -128) & (rq.mul <= 127)).all()):
        return []
    return [_finding(Finding(layer, "affine-range", f"the post-ADC multiplier reaches {int(rq.mul.abs().max())}, "
                             f"beyond 8 bits.", "lower the output scale's resolution, or keep the layer digital."))]


REPORT_COLUMNS = ("layer", "kind", "core", "kernel", "stride", "bits w/in/out", "scales 2^k in/w/out", "shift",
                  "findings")


def format_report(rows: list[LayerReport]) -> str:
    """The report as an aligned text table, one line per layer (findings by rule; '!' marks an error)."""
    def cell(row: LayerReport) -> list[str]:
        weight_bits = row.bits.get("weights", "-")
        bits = f"{weight_bits}/{row.bits.get('input', '-')}/{row.bits.get('output', '-')}" if row.bits else "-"
        scales = "/".join(str(row.scales.get(k, "-")) for k in ("input", "weights", "output")) if row.scales else "-"
        shift = str(row.requant.get("shift", "-")) if row.requant else "-"
        if "adc_shift" in row.requant:
            shift += f" (adc {row.requant['adc_shift']})"
        findings = ", ".join(f"{'!' if f['severity'] == 'error' else ''}{f['rule']}" for f in row.findings) or "-"
        geometry = ["x".join(map(str, v)) if v else "-" for v in (row.kernel, row.stride)]
        return [row.layer, row.kind, row.core, *geometry, bits, scales, shift, findings]

    table = [list(REPORT_COLUMNS), *(cell(row) for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(REPORT_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)


class Report(list):
    """The rows of a model's report (a list of LayerReport) that prints as the per-layer table."""

    def __str__(self) -> str:
        return format_report(self)
