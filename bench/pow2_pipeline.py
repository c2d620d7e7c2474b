"""The power-of-two pipeline (PTQ -> weight-only QAT -> final PTQ) on the bundled digits, beside its float-scale twin.

    python bench/pow2_pipeline.py [--seeds 0 1 2] [--bits 8/8 4/8] [--epochs 5] [--threads 2]

Per seed and W/A bits, ``quantlib.pow2.run`` with the default configuration (digits_cnn pretrained 20 epochs, QAT 5
epochs) three ways: power-of-two scales rounded (``scale_rounding: round``, the default), power-of-two scales rounded
up (``ceil``), and float scales (``power_of_2: false`` for every tensor type). One JSON line per run (the accuracy
after each step; for the power-of-two runs the fake-vs-integer and onnxruntime mismatches on the first evaluation
batch), then one per bits and scales with the means over the seeds and the drop from float.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

import torch

from quantlib.pow2 import run, verify_deployment
from quantlib.pow2.report import ACCURACIES

SCALES = ("pow2_round", "pow2_ceil", "float")


def config(w_bits: int, a_bits: int, scales: str, seed: int, epochs: int) -> dict:
    """The default configuration with these bits, scales (one of ``SCALES``), seed and QAT epochs."""
    pow2 = scales != "float"
    bits = {"weight": w_bits, "input": a_bits, "output": a_bits, "bias": 32}
    quantization: dict = {kind: {"bitwidth": b, "power_of_2": pow2} for kind, b in bits.items()}
    if pow2:
        quantization["scale_rounding"] = scales.removeprefix("pow2_")
    return {"quantization": quantization,
            "training": {"epochs": epochs, "seed": seed, "device": "cpu", "progress": False}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", nargs="+", default=["8/8", "4/8"], help="W/A bits")
    parser.add_argument("--epochs", type=int, default=5, help="weight-only QAT epochs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    groups: dict[tuple[str, str], list[dict]] = {}
    for bits in args.bits:
        w_bits, a_bits = (int(b) for b in bits.split("/"))
        for seed in args.seeds:
            for scales in SCALES:
                start = time.perf_counter()
                result = run(config(w_bits, a_bits, scales, seed, args.epochs))
                row = {"bits": bits, "scales": scales, "seed": seed,
                       **{name: round(result.report[name], 2) for name in ACCURACIES},
                       "seconds": round(time.perf_counter() - start, 1)}
                if scales != "float":
                    row.update(verify_deployment(result, result.evaluation[0][0]))
                print(json.dumps(row), flush=True)
                groups.setdefault((bits, scales), []).append(row)
    for (bits, scales), rows in groups.items():
        means = {name: round(statistics.fmean(r[name] for r in rows), 2) for name in ACCURACIES}
        print(json.dumps({"bits": bits, "scales": scales, "seeds": len(rows), **{f"{k}_mean": v for k, v in
                          means.items()},
                          "final_minus_float": round(means["final_accuracy"] - means["initial_accuracy"], 2),
                          "qat_minus_float": round(means["qat_best_accuracy"] - means["initial_accuracy"], 2)}),
              flush=True)


if __name__ == "__main__":
    main()
