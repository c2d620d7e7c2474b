"""Compile speed per zoo model, beside torch.ao in the same process; one JSON line per model.

    python bench/compile_speed.py [--repeats 5] [--threads 2] [--models resnet20 resnet110 ...] [--cold]

Figures (medians of ``--repeats`` runs after one warm-up each, in seconds; the flows take turns, run after run, so
that both meet the same load of a shared machine, and each starts after a garbage collection):
- ``canonicalise_s``: trace + canonicalise;
- ``diana_flow_s``: the whole DIANA flow, from_fp_model -> calibrate -> map_scales -> clip_scales_pow2 -> map_to_hw ->
  integrize -> export (DORY file, twin checked by onnxruntime on the golden input, goldens, config, report), digital;
- ``torch_ao_s``: torch.ao's ``prepare_fx`` -> calibration -> ``convert_fx`` (x86 default qconfig) on the same model
  and the same calibration batch; ``ratio`` = diana_flow_s / torch_ao_s.
With ``--cold``, each flow instead runs once in a fresh process (imports and first-call caches included), as a user
meets it: ``diana_flow_cold_s``, ``torch_ao_cold_s``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.editors.canonicalise import canonicalise
from quantlib.zoo import ZOO, build

DIANA_ZOO = [name for name in ZOO if name != "functional_net"]  # LeakyReLU has no integer form


def median_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The median time of each run, the runs taking turns ``repeats`` times after one warm-up each."""
    for run in runs.values():
        run()  # warm-up: imports, first-call caches
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def diana_flow(model: nn.Module, batch: torch.Tensor, out_dir: Path) -> None:
    dm = DianaModule.from_fp_model(model, batch[:1])
    dm.calibrate([batch]).map_scales().clip_scales_pow2().map_to_hw().integrize()
    dm.export(out_dir, "net")


def torch_ao(model: nn.Module, batch: torch.Tensor) -> None:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (batch[:1],))
        with torch.no_grad():
            prepared(batch)
        convert_fx(prepared)


def compile_speed(name: str, repeats: int, out_dir: Path) -> dict:
    model = build(name)
    batch = torch.randn(16, *ZOO[name].input_shape, generator=torch.Generator().manual_seed(0))
    t = median_times({"canonicalise": lambda: canonicalise(model),
                      "diana": lambda: diana_flow(model, batch, out_dir / name),
                      "torch_ao": lambda: torch_ao(model, batch)}, repeats)
    return {"model": name, "canonicalise_s": round(t["canonicalise"], 4), "diana_flow_s": round(t["diana"], 3),
            "torch_ao_s": round(t["torch_ao"], 3), "ratio": round(t["diana"] / t["torch_ao"], 2)}


def cold_time(name: str, flow: str) -> float:
    """The time of one ``flow`` ('diana' or 'torch_ao') on ``name`` in a fresh Python process."""
    code = (f"import sys, time, tempfile, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"torch.set_num_threads(2); from pathlib import Path; from compile_speed import *; "
            f"model = build({name!r}); batch = torch.randn(16, *ZOO[{name!r}].input_shape); "
            f"start = time.perf_counter(); "
            + ("diana_flow(model, batch, Path(tempfile.mkdtemp()))" if flow == "diana" else "torch_ao(model, batch)")
            + "; print(time.perf_counter() - start)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=DIANA_ZOO, choices=DIANA_ZOO)
    parser.add_argument("--cold", action="store_true", help="one run per flow in a fresh process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cold:
        for name in args.models:
            diana, ao = cold_time(name, "diana"), cold_time(name, "torch_ao")
            print(json.dumps({"model": name, "diana_flow_cold_s": round(diana, 3), "torch_ao_cold_s": round(ao, 3),
                              "ratio": round(diana / ao, 2)}), flush=True)
        return
    results = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for name in args.models:
            results[name] = compile_speed(name, args.repeats, Path(out_dir))
            print(json.dumps(results[name]), flush=True)
    if {"resnet20", "resnet110"} <= set(results):
        ratio = results["resnet110"]["diana_flow_s"] / results["resnet20"]["diana_flow_s"]
        print(json.dumps({"resnet110_over_resnet20": round(ratio, 2)}))


if __name__ == "__main__":
    main()
