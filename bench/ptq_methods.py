"""Post-training quantisation methods on the bundled digits: accuracy and time per method and bit-width.

    python bench/ptq_methods.py [--seeds 0 1 2] [--methods rtn bias_correction adaround] [--iters N] [--threads 2]

Per seed, a float digits CNN is trained (20 epochs, as bench/accuracy_digits.py) and quantised by each method at
W8A8, W4A8, W4A4, W3A3 and W2A4 (first and last layer at 8 bits, per-channel weights, float scales), calibrated on
512 training images; test accuracy (%) on the 359 test images. One JSON line per (method, bits, seed) with the
seconds the method took (warm: imports and first calls are paid by a warm-up run first), then one per (method, bits)
with the means over seeds and the share of the RTN-to-float gap the method recovers. ``--iters`` sets the iterations
of the methods that have them (AdaRound, BRECQ, QDrop; default: each method's own, 1000).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from quantlib import ptq
from quantlib.data import digits_loaders
from quantlib.training import accuracy, train_epochs
from quantlib.zoo import digits_cnn

BITS = [(8, 8), (4, 8), (4, 4), (3, 3), (2, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=ptq.available_methods(), choices=ptq.available_methods())
    parser.add_argument("--iters", type=int, help="iterations of the methods that take them (default: their own)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: dict[tuple[str, int, int], list[dict]] = {}
    floats = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        train, test = digits_loaders(seed=seed)
        model = train_epochs(digits_cnn(), train, epochs=20, lr=3e-3).eval()
        floats.append(accuracy(model, test))
        calibration = [images for images, _ in list(train)[:8]]
        ptq.quantize(model, calibration[:1], "adaround", iters=2)  # warm-up: imports and first calls
        for method in args.methods:
            for w_bits, a_bits in BITS:
                start = time.perf_counter()
                params = {"iters": args.iters} if args.iters and "iters" in ptq.get_method(method).params.__dict__ \
                    else {}
                quantised = ptq.quantize(model, calibration, method, w_bits=w_bits, a_bits=a_bits, **params)
                seconds = time.perf_counter() - start
                row = {"method": method, "bits": f"W{w_bits}A{a_bits}", "seed": seed, "float": round(floats[-1], 2),
                       "accuracy": round(accuracy(quantised, test), 2), "seconds": round(seconds, 2)}
                rows.setdefault((method, w_bits, a_bits), []).append(row)
                print(json.dumps(row), flush=True)
    float_mean = statistics.mean(floats)
    for (method, w_bits, a_bits), runs in rows.items():
        mean = statistics.mean(r["accuracy"] for r in runs)
        rtn = rows.get(("rtn", w_bits, a_bits))
        seconds = statistics.mean(r["seconds"] for r in runs)
        summary = {"method": method, "bits": f"W{w_bits}A{a_bits}", "float_mean": round(float_mean, 2),
                   "accuracy_mean": round(mean, 2), "seconds_mean": round(seconds, 2)}
        if rtn is not None and method != "rtn":
            rtn_mean = statistics.mean(r["accuracy"] for r in rtn)
            gap = float_mean - rtn_mean
            summary["gap_recovered"] = round((mean - rtn_mean) / gap, 2) if gap > 0 else None
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
