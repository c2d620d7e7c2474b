"""Time trace + canonicalise for every zoo model; one JSON line per model.

    python bench/compile_speed.py [--repeats 5] [--threads 2]

Figures: the median and the best of ``--repeats`` runs after one warm-up, in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from quantlib.editors.canonicalise import canonicalise
from quantlib.zoo import ZOO, build


def time_canonicalise(name: str, repeats: int) -> dict:
    model = build(name)
    x = torch.randn(1, *ZOO[name].input_shape)
    canonicalise(model)  # warm-up: imports, first-call caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gm = canonicalise(model)
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        ref, out = model(x), gm(x)
    return {"model": name, "nodes": len(gm.graph.nodes),
            "trace_canonicalise_s_median": round(statistics.median(times), 4),
            "trace_canonicalise_s_best": round(min(times), 4),
            "max_rel_diff": float((out - ref).abs().max() / ref.abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in ZOO:
        print(json.dumps(time_canonicalise(name, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
