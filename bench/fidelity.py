"""Integer fidelity per zoo model: exact fake-quant vs integer GraphModule vs onnxruntime, at every layer.

    python bench/fidelity.py [--inputs 64] [--threads 2] [--scales pow2 float float_asymmetric]

One JSON line per model and kind of scales: layers and elements compared; mismatching elements and the largest
difference in LSB for the fake-quantised model (biases on their grids) vs the exact model at every quantiser, exact
vs integer, and integer vs onnxruntime at every layer. ``pow2``: the generic power-of-two path (8 bits per tensor);
``float`` / ``float_asymmetric``: a W8A8 round-to-nearest PTQ result (per-channel float scales, symmetric or with
learned zero points) through ``ptq.deploy``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from quantlib import ptq
from quantlib.backends.onnx import export_integer_onnx, verify_onnxruntime
from quantlib.true_quantisation import pow2_integer_flow
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact
from quantlib.zoo import ZOO, build

INTEGER_ZOO = [name for name in ZOO if name != "functional_net"]  # LeakyReLU has no integer form


SCALES = ("pow2", "float", "float_asymmetric")


def fidelity(name: str, scales: str, n_inputs: int, out_dir: Path) -> dict:
    g = torch.Generator().manual_seed(0)
    shape = ZOO[name].input_shape
    calibration = [torch.randn(16, *shape, generator=g) for _ in range(2)]
    x = torch.randn(n_inputs, *shape, generator=g)
    start = time.perf_counter()
    if scales == "pow2":
        flow = pow2_integer_flow(build(name), x[:2], calibration)
    else:
        flow = ptq.deploy(ptq.quantize(build(name), calibration, "rtn", w_bits=8, a_bits=8,
                                       symmetric=scales == "float"), x[:2])
    fake_vs_exact = compare_fake_and_exact(flow.fake, flow.exact, x)
    exact_vs_int = compare_exact_and_integer(flow.exact, flow.integer, x)
    exported = export_integer_onnx(flow.integer, x[:2], out_dir / f"{name}.onnx")
    int_vs_ort = verify_onnxruntime(flow.integer, exported, x)
    elapsed = time.perf_counter() - start
    return {
        "model": name, "scales": scales, "inputs": n_inputs, "layers": len(exact_vs_int),
        "elements": sum(c.elements for c in exact_vs_int),
        "fake_vs_exact_mismatches": sum(c.mismatches for c in fake_vs_exact),
        "fake_vs_exact_max_lsb": max(c.max_abs_diff for c in fake_vs_exact),
        "exact_vs_int_mismatches": sum(c.mismatches for c in exact_vs_int),
        "exact_vs_int_max_lsb": max(c.max_abs_diff for c in exact_vs_int),
        "int_vs_ort_mismatches": sum(c.mismatches for c in int_vs_ort),
        "int_vs_ort_max_lsb": max(c.max_abs_diff for c in int_vs_ort),
        "seconds": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scales", nargs="+", choices=SCALES, default=list(SCALES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out_dir:
        for name in INTEGER_ZOO:
            for scales in args.scales:
                print(json.dumps(fidelity(name, scales, args.inputs, Path(out_dir))), flush=True)


if __name__ == "__main__":
    main()
