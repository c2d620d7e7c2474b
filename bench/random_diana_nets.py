"""Random DIANA-legal nets (quantlib/zoo/random_diana_net.py) through the whole DIANA flow with both analog
policies: how many are exact at every layer (fake-quantised = exact = integer = onnxruntime on the twin = the DORY
file, interpreted), how many carry a hardware-rule error and which, and how many raised.

    python bench/random_diana_nets.py [--nets 200] [--first-seed 0] [--threads 2]

One JSON line per refused or failed net, then one with the counts.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time

import torch

from quantlib.backends.diana.fidelity import diana_fidelity
from quantlib.zoo.random_diana_net import random_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    counts: collections.Counter = collections.Counter()
    start = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.nets):
        _, model, calibration, x = random_case(seed)
        for analog in ("none", "auto"):
            with tempfile.TemporaryDirectory() as out:
                try:
                    fidelity = diana_fidelity(model, calibration, x, analog, f"{out}/export")
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    counts["raised"] += 1
                    print(json.dumps({"seed": seed, "analog": analog, "raised": f"{type(exc).__name__}: {exc}"}))
                    continue
            rules = sorted({e.split("[", 1)[1].split("]", 1)[0] for e in fidelity.errors})
            counts["exact" if fidelity.exact else "mismatching"] += 1
            counts["refused by a rule" if rules else "no hardware error"] += 1
            counts.update(f"rule {r}" for r in rules)
            if rules or not fidelity.exact:
                print(json.dumps({"seed": seed, "analog": analog, "rules": rules, "mismatches": fidelity.mismatches,
                                  "errors": fidelity.errors}))
    print(json.dumps({"flows": 2 * args.nets, **counts, "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
