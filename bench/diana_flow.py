"""The whole DIANA flow per model, digital-only and mixed (analog="auto"): layers per core, time of each stage, and
mismatches at every layer between the hardware-mapped fake-quantised model, the exact and integer models,
onnxruntime on the exported twin, and the DORY file itself (read back by dory_interpreter).

    python bench/diana_flow.py [--inputs 64] [--threads 2] [--models resnet20 resnet8_mlperf ds_cnn ...]

One JSON line per model and policy.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact
from quantlib.zoo import ZOO, build


def diana_flow(name: str, analog: str, n_inputs: int, out_dir: Path) -> dict:
    g = torch.Generator().manual_seed(0)
    shape = ZOO[name].input_shape
    calibration = [torch.randn(16, *shape, generator=g) for _ in range(2)]
    x = torch.randn(n_inputs, *shape, generator=g)
    times = {}
    start = time.perf_counter()
    dm = DianaModule.from_fp_model(build(name), analog=analog)
    times["from_fp_model"] = time.perf_counter() - start
    for stage, run in [("calibrate", lambda: dm.calibrate(calibration)), ("map_scales", lambda: dm.map_scales(
            calibration)), ("clip_scales_pow2", dm.clip_scales_pow2), ("map_to_hw", dm.map_to_hw),
            ("integrize", dm.integrize), ("export", lambda: dm.export(out_dir / name, name))]:
        begin = time.perf_counter()
        result = run()
        times[stage] = time.perf_counter() - begin
    exact = dm.exact_model()
    fake_vs_exact = compare_fake_and_exact(dm.gm.eval(), exact, x)
    exact_vs_int = compare_exact_and_integer(exact, dm.integer, x)
    verified = dm.export(out_dir / f"{name}-verify", name, verify_on=x)
    int_vs_twin = verified.comparisons
    cores = list(dm.cores.values())
    return {
        "model": name, "analog": analog, "digital_layers": cores.count("digital"),
        "analog_layers": cores.count("analog"), "hardware_layers": len(int_vs_twin), "inputs": n_inputs,
        "fake_vs_exact_mismatches": sum(c.mismatches for c in fake_vs_exact),
        "exact_vs_int_mismatches": sum(c.mismatches for c in exact_vs_int),
        "int_vs_twin_mismatches": sum(c.mismatches for c in int_vs_twin),
        "int_vs_dory_file_mismatches": sum(c.mismatches for c in verified.dory_comparisons),
        "elements_compared": sum(c.elements for c in int_vs_twin),
        "golden_mismatches": result.mismatches,
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "flow_seconds": round(sum(times.values()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet8_mlperf", "ds_cnn", "mobilenetv2",
                                                        "mobilenet_diana", "digits_cnn"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out_dir:
        for name in args.models:
            for analog in ("none", "auto"):
                print(json.dumps(diana_flow(name, analog, args.inputs, Path(out_dir))), flush=True)


if __name__ == "__main__":
    main()
