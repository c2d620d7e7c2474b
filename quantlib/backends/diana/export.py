"""Writing a DIANA network's deliverables into one folder (docs/export-format.md): the DORY file, its executable
twin, the golden activations (checked against onnxruntime on the twin and against the DORY file itself), DORY's config
and the JSON report. The folder is built under a temporary name and renamed into place, so it is complete or absent."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.fx as fx

from quantlib.atomic_files import umask_mode
from quantlib.backends.diana.dory_conformance import check_dory_onnx
from quantlib.backends.diana.dory_export import dory_onnx
from quantlib.backends.diana.dory_files import dory_config, golden_text
from quantlib.backends.diana.dory_interpreter import interpret_dory
from quantlib.backends.diana.hardware_layers import HardwareGraph, LayerKind, hardware_layers, range_bits
from quantlib.backends.diana.report import LayerReport
from quantlib.backends.diana.twin import DIALECTS, twin_onnx
from quantlib.backends.onnx.integer_export import IntegerOnnx
from quantlib.backends.onnx.verify import infer_types, onnx_session, run_onnxruntime
from quantlib.errors import ExportError
from quantlib.graphs.tracing import with_shapes
from quantlib.verification import LayerComparison, compare, compare_in_chunks, record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how its golden values compare with onnxruntime on the twin."""

    out_dir: Path
    files: list[str]
    comparisons: list[LayerComparison]       # per hardware layer: integer model vs onnxruntime on the twin
    dory_comparisons: list[LayerComparison]  # per hardware layer: integer model vs the DORY file, interpreted
    errors: list[str]                        # hardware-rule errors of the report (the files are written all the same)
    seconds: float

    @property
    def mismatches(self) -> int:
        """Elements where the twin or the interpreted DORY file differs from the integer model."""
        return sum(c.mismatches for c in [*self.comparisons, *self.dory_comparisons])

    def summary(self) -> str:
        """One line: how the twin and the DORY file compare with the integer model."""
        def counts(comparisons: list[LayerComparison]) -> str:
            return (f"{sum(c.mismatches for c in comparisons)} mismatches in {sum(c.elements for c in comparisons)} "
                    f"values at {len(comparisons)} layers")
        return (f"the integer model vs onnxruntime on the twin: {counts(self.comparisons)}; vs the DORY file "
                f"(interpreted): {counts(self.dory_comparisons)}")


def export_diana(integer: fx.GraphModule, kinds: Sequence[LayerKind], report: list[LayerReport], sample: torch.Tensor,
                 out_dir: str | os.PathLike, name: str, dialect: str = "dory",
                 verify_on: torch.Tensor | None = None) -> ExportResult:
    """Export the integer DIANA graph ``integer``, made of layers of ``kinds``, into ``out_dir``; goldens are
    computed on ``sample`` (one input), and onnxruntime on the twin is compared with ``integer`` at every hardware
    layer on ``verify_on`` (default: ``sample``)."""
    if dialect not in DIALECTS:
        raise ExportError(f"Unknown dialect {dialect!r}; use one of {list(DIALECTS)}.")
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"Network name {name!r} must be a plain file-name stem such as 'resnet20'.")
    check_output_folder(out_dir)
    start = time.perf_counter()
    integer = with_shapes(integer, sample)
    hw = hardware_layers(integer, kinds)
    dory, dory_tensors = dory_onnx(integer, hw, name)
    problems = check_dory_onnx(dory)
    if problems:
        raise ExportError("The DORY file would break DORY's rules:\n" + "\n".join(f"  {p}" for p in problems))
    twin = twin_onnx(integer, hw, dialect, sample, f"{name}_twin")
    goldens = record(integer, sample, [hw.input_quantiser.name, *(layer.output.name for layer in hw.layers)])
    rq = integer.get_submodule(hw.input_quantiser.target)
    checks = [twin_check(hw, twin, dialect), dory_file_check(hw, dory, dory_tensors, rq.lo < 0)]
    comparisons, dory_comparisons = compare_with_integer(integer, hw, verify_on, checks) if verify_on is not None \
        else [check(sample, goldens) for check in checks]  # the golden input: its values are recorded already
    files = {
        f"{name}_QL_DORY.onnx": dory.SerializeToString(deterministic=True),
        f"{name}_QL_NOANNOTATION.onnx": twin.model.SerializeToString(deterministic=True),
        "config.json": json.dumps(dory_config(f"{name}_QL_DORY.onnx", range_bits(rq.lo, rq.hi), rq.lo < 0,
                                              hw.input_scale), indent=2) + "\n",
        "input.txt": golden_text("input", _chw(goldens[hw.input_quantiser.name])),
        **{f"out_layer{layer.index}.txt": golden_text(layer.name, _chw(goldens[layer.output.name]))
           for layer in hw.layers},
        f"{name}_report.json": json.dumps(_report_json(report, hw, twin, dory_tensors, dialect), indent=2) + "\n",
    }
    out = _write_folder(Path(out_dir), files)
    errors = [f"{row.layer}: [{f['rule']}] {f['message']}" for row in report for f in row.findings
              if f["severity"] == "error"]
    result = ExportResult(out, sorted(files), comparisons, dory_comparisons, errors, time.perf_counter() - start)
    logger.info("Exported %d layers to %s in %.2f s (elements differing from the integer model: %d on the twin, %d "
                "in the DORY file).", len(hw.layers), out, result.seconds, sum(c.mismatches for c in comparisons),
                sum(c.mismatches for c in dory_comparisons))
    return result


def _nchw(values: torch.Tensor) -> torch.Tensor:
    """Activations as N x C x H x W: a [N, C] feature vector is [N, C, 1, 1] (DORY's tensors are 4-D)."""
    return values.reshape(*values.shape, 1, 1) if values.dim() == 2 else values


def _chw(values: torch.Tensor) -> torch.Tensor:
    """One activation as C x H x W: a linear layer's [1, C] output is [C, 1, 1] (DORY's 1x1 convolution)."""
    return _nchw(values)[0]


LayerCheck = Callable[[torch.Tensor, dict[str, torch.Tensor]], list[LayerComparison]]
"""(real inputs, the integer model's values on them by node name) -> one comparison per hardware layer."""


def twin_check(hw: HardwareGraph, twin: IntegerOnnx, dialect: str) -> LayerCheck:
    """The integer model's values against onnxruntime's on the twin (fed the integer inputs for ``dory``, the real
    ones for ``htvm``)."""
    types = infer_types(twin.model)
    tensors = {layer.output.name: twin.node_tensors[layer.output.name] for layer in hw.layers}

    def check(part: torch.Tensor, expected: dict[str, torch.Tensor]) -> list[LayerComparison]:
        fed = part if dialect == "htvm" else expected[hw.input_quantiser.name]
        got = run_onnxruntime(twin.model, fed.numpy().astype(np.float32), {t: types[t] for t in tensors.values()})
        return [compare(layer.name, expected[layer.output.name], torch.from_numpy(got[tensors[layer.output.name]]))
                for layer in hw.layers]

    return check


def dory_file_check(hw: HardwareGraph, dory: onnx.ModelProto, dory_tensors: dict[int, str],
                    input_signed: bool) -> LayerCheck:
    """The integer model's values against what the DORY file computes (read by ``dory_interpreter``) on their
    integers."""
    session = onnx_session(interpret_dory(dory, input_signed, [dory_tensors[layer.index] for layer in hw.layers]))

    def check(part: torch.Tensor, expected: dict[str, torch.Tensor]) -> list[LayerComparison]:
        fed = _nchw(expected[hw.input_quantiser.name]).numpy().astype(np.float32)
        got = session.run(None, {dory.graph.input[0].name: fed})
        return [compare(layer.name, expected[layer.output.name], torch.from_numpy(value).reshape(
            expected[layer.output.name].shape)) for layer, value in zip(hw.layers, got, strict=True)]

    return check


def compare_with_integer(integer: fx.GraphModule, hw: HardwareGraph, x: torch.Tensor,
                         checks: list[LayerCheck]) -> list[list[LayerComparison]]:
    """Per check, per hardware layer, on the real inputs ``x`` in chunks: the integer model is run once per chunk
    and every check compares against those values."""
    names = [hw.input_quantiser.name, *(layer.output.name for layer in hw.layers)]
    n = len(hw.layers)

    def compare_batch(part: torch.Tensor) -> list[LayerComparison]:
        expected = record(integer, part, names)
        return [c for check in checks for c in check(part, expected)]

    merged = compare_in_chunks(compare_batch, x)
    return [merged[i * n:(i + 1) * n] for i in range(len(checks))]


def _report_json(report: list[LayerReport], hw: HardwareGraph, twin: IntegerOnnx, dory_tensors: dict[int, str],
                 dialect: str) -> dict:
    """The report rows, and per hardware layer its golden file and the tensors of the twin and of the DORY file
    that hold its output."""
    return {"dialect": dialect, "layers": [dataclasses.asdict(row) for row in report],
            "hardware_layers": [{"index": layer.index, "name": layer.name, "kind": layer.kind.name,
                                 "golden": f"out_layer{layer.index}.txt",
                                 "twin_tensor": twin.node_tensors[layer.output.name],
                                 "dory_tensor": dory_tensors[layer.index]} for layer in hw.layers]}


MANIFEST = ".quantlib-export"
"""The file in every export folder that lists the files the export wrote: a new export replaces a folder only when
it holds exactly those files (and the manifest)."""


def check_output_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` resolved, if an export may write it: it does not exist, is an empty folder, or holds exactly the
    files an earlier export wrote; else ExportError naming what is in the way. Call it before any work."""
    out = Path(out_dir).resolve()
    if not out.exists():
        return out
    if not out.is_dir():
        raise ExportError(f"Output folder '{out}' is a file; choose a folder.")
    present = {p.name for p in out.iterdir()}
    if not present:
        return out
    written = _manifest(out / MANIFEST)
    shown = ", ".join(sorted(present)[:5]) + (", ..." if len(present) > 5 else "")
    if written is None and MANIFEST in present:
        raise ExportError(f"Output folder '{out}' holds the marker of an export by an earlier quantlib version, which "
                          f"lists no files, so quantlib cannot tell which of its {len(present)} entries ({shown}) it "
                          f"wrote; empty the folder yourself or choose another.")
    if written is None:
        raise ExportError(f"Output folder '{out}' exists and is not an earlier quantlib export (it holds "
                          f"{len(present)} entries: {shown}); choose another folder or empty it.")
    extra = sorted(present - written - {MANIFEST})
    if extra:
        raise ExportError(f"Output folder '{out}' holds files that no export wrote: {extra}; an export replaces the "
                          f"whole folder, so move them out or choose another folder.")
    return out


def _manifest(path: Path) -> set[str] | None:
    """The file names a manifest lists, or None when there is none (or it is not one)."""
    try:
        listed = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return set(listed) if isinstance(listed, list) and all(isinstance(f, str) for f in listed) else None


def _write_folder(out: Path, files: dict[str, str | bytes]) -> Path:
    """Write ``files`` and their manifest into a temporary folder beside ``out`` and rename it to ``out`` (with the
    permissions the umask gives a new folder). An existing ``out`` is replaced only when ``check_output_folder``
    allows it; if the swap fails, the earlier export is put back."""
    out = check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = out.with_name(f".{out.name}.old")
    manifest = json.dumps({"written_by": "quantlib", "files": sorted(files)}, indent=2) + "\n"
    try:
        for file, data in {**files, MANIFEST: manifest}.items():
            (tmp / file).write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, umask_mode(0o777))
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            if old.exists():
                os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class TwinRunner:
    """onnxruntime on the twin exported to ``out_dir``, loaded once: integer outputs for real inputs. A ``dory``
    twin is fed the inputs quantised as config.json says (``floor(x / input_scale)``, clipped to the input bits)."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        out = Path(out_dir)
        config = json.loads((out / "config.json").read_text())
        self.dialect = json.loads(next(out.glob("*_report.json")).read_text())["dialect"]
        bits, signed = config["input_bits"], config["input_signed"]
        self.scale = config["input_scale"]
        self.lo, self.hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        model = onnx.load(str(next(out.glob("*_QL_NOANNOTATION.onnx"))))
        self.session = onnx_session(model)
        self.input, self.output = model.graph.input[0].name, model.graph.output[0].name

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        fed = x.double()
        if self.dialect == "dory":
            fed = torch.floor(fed / self.scale).clamp(self.lo, self.hi)
        return self.session.run([self.output], {self.input: fed.numpy().astype(np.float32)})[0]


def twin_accuracy(out_dir: str | os.PathLike, loader: Iterable) -> float:
    """Top-1 accuracy (%) of onnxruntime running the twin exported to ``out_dir`` on (input, label) batches."""
    twin = TwinRunner(out_dir)
    correct = total = 0
    for x, y in loader:
        correct += int((torch.from_numpy(np.asarray(twin(x))).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / total
