"""The per-layer report of a DIANA model: core, geometry, bits, every scale as a power of two, the requantisation,
and the hardware rules each layer breaks. Before hardware mapping it holds the layers' cores and findings only."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch.fx as fx
from torch import nn

from quantlib.backends.diana.core_choice import CoreChoice, layer_nodes
from quantlib.backends.diana.hardware_layers import (
    HardwareLayer,
    LayerKind,
    hardware_layers,
    range_bits,
    requant_mul_add,
    scale_exponent,
)
from quantlib.backends.diana.hardware_rules import Finding, integer_values, pair, shift_findings
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


def layer_reports(fake: fx.GraphModule, exact: fx.GraphModule | None, choice: CoreChoice,
                  kinds: Sequence[LayerKind]) -> list[LayerReport]:
    """The report of a DIANA model: from its exact graph's layers of ``kinds`` once hardware-mapped, else from
    ``fake``'s layers."""
    if exact is None:
        modules = dict(fake.named_modules())
        return [LayerReport(name, "conv" if isinstance(modules[name], nn.Conv2d) else "linear", choice.cores[name],
                            **_geometry(modules[name]), findings=[_finding(f) for f in choice.findings[name]])
                for name in layer_nodes(fake) if name in choice.cores]
    modules = dict(exact.named_modules())
    fake_modules = dict(fake.named_modules())
    return [_mapped_row(layer, modules, fake_modules, choice) for layer in hardware_layers(exact, kinds).layers]


def _geometry(module: nn.Module) -> dict[str, list[int]]:
    """Kernel and stride of a conv or pool (a true-quantised conv's kernel is its weight's shape)."""
    if getattr(module, "stride", None) is None:
        return {}
    kernel = getattr(module, "kernel_size", None) or (module.weight.shape[2:] if hasattr(module, "weight") else None)
    return {"kernel": list(pair(kernel)) if kernel is not None else None, "stride": list(pair(module.stride))}


def _mapped_row(layer: HardwareLayer, modules: dict, fake_modules: dict, choice: CoreChoice) -> LayerReport:
    """A layer's row from the exact graph, as its kind describes it (and, for what the integer op folds away and
    the calibration of its quantisers, the fake one)."""
    op = modules[layer.op.target]
    core = choice.cores.get(layer.name, "digital")
    findings = [_finding(f) for f in choice.findings.get(layer.name, [])]
    row = LayerReport(layer.name, layer.kind.name, core, **_geometry(op), findings=findings)
    if layer.requant is None:  # a max pool
        return dataclasses.replace(row, findings=findings + [
            _finding(f) for f in layer.kind.dory_limits(layer, None, None)])
    rq: Requant = modules[layer.requant.target]
    bits = {"output": range_bits(rq.lo, rq.hi)}
    scales = {"output": scale_exponent(rq.eps_out)}
    source = source_requant(layer.inputs[0], modules)
    if source is not None:
        bits["input"] = range_bits(source.lo, source.hi)
        scales["input"] = scale_exponent(source.eps_out)
    channels = layer.op.meta["tensor_meta"].shape[1] if "tensor_meta" in layer.op.meta else rq.mul.numel()
    mul, add = requant_mul_add(op, rq, channels)
    requant = {"mul": integer_values(mul), "add": integer_values(add), "shift": rq.shift, "clip": [rq.lo, rq.hi]}
    kind_row = layer.kind.row(op, fake_modules.get(layer.name))
    broken = [*layer.kind.checks(layer, op, rq, modules), *shift_findings(layer.name, rq.shift),
              *_calibration_findings(layer, fake_modules),
              *layer.kind.dory_limits(layer, rq, _channels_of(layer.inputs[0]))]
    findings += [_finding(f) for f in broken]
    return dataclasses.replace(row, bits={**bits, **kind_row.get("bits", {})},
                               scales={**scales, **kind_row.get("scales", {})},
                               requant={**requant, **kind_row.get("requant", {})}, findings=findings)


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
