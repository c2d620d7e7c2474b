"""Training-step time on ResNet-20 (batch 32, 32x32): float vs quantlib 8-bit fake-quant vs torch.ao prepare_qat_fx.

    python bench/qat_overhead.py [--steps 30] [--threads 2]

All models run in the same process, interleaved step by step, so that the ratios hold on a noisy machine. "float" is
the float model with its BatchNorms folded (the graph our fake-quant model trains); "float_with_bn" is the model as
written. Prints one JSON line: median seconds per step of each, and the ratios to "float".
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings

import torch
from torch import nn

from quantlib.calibration import calibrate
from quantlib.editors.canonicalise import canonicalise
from quantlib.fake_quantisation import quantize
from quantlib.zoo import build


def torch_ao_qat(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """torch.ao's FX QAT preparation (fbgemm default qconfig), calibrated on the example batch."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_fx(copy.deepcopy(model).train(), get_default_qat_qconfig_mapping("fbgemm"), (example,))
    with torch.no_grad():
        prepared(example)
    return prepared


def step_time(model: nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    optimiser.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimiser.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = build("resnet20")
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    models = {
        "float": canonicalise(model, x).train(),  # BN folded: the same graph our fake-quant model trains
        "float_with_bn": copy.deepcopy(model).train(),
        "quantlib_8bit": calibrate(quantize(model, x), [x]).train(),
        "torch_ao_qat_fx": torch_ao_qat(model, x),
    }
    optimisers = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(args.steps + 3):
        for k, m in models.items():
            t = step_time(m, optimisers[k], x, y)
            if i >= 3:  # warm-up
                times[k].append(t)
    median = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"model": "resnet20", "batch": 32, "threads": args.threads, "steps": args.steps,
                      **{f"{k}_s_per_step": round(v, 4) for k, v in median.items()},
                      "quantlib_over_float": round(median["quantlib_8bit"] / median["float"], 3),
                      "quantlib_over_float_with_bn": round(median["quantlib_8bit"] / median["float_with_bn"], 3),
                      "torch_ao_over_float": round(median["torch_ao_qat_fx"] / median["float"], 3)}))


if __name__ == "__main__":
    main()
