"""quantlib demo: trace a model, canonicalise it editor by editor, and check that every stage computes what the float
model computes.

    python examples/demo.py [--model resnet20]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
import torch.fx as fx

from quantlib.editors.canonicalise import canonicalisation_editors
from quantlib.graphs import trace
from quantlib.zoo import ZOO, build


def describe(gm: fx.GraphModule) -> str:
    ops = Counter(n.op for n in gm.graph.nodes)
    modules = dict(gm.named_modules())
    kinds = Counter(type(modules[n.target]).__name__ for n in gm.graph.nodes if n.op == "call_module")
    top = ", ".join(f"{k} x{v}" for k, v in kinds.most_common(6))
    return (f"{len(gm.graph.nodes):4d} nodes | {ops['call_function'] + ops['call_method']:3d} functional | "
            f"{ops['call_module']:3d} module calls ({top})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20", choices=sorted(ZOO))
    args = parser.parse_args()
    torch.set_num_threads(2)

    model = build(args.model)
    x = torch.randn(8, *ZOO[args.model].input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)

    print(f"quantlib demo: canonicalising {args.model} (random weights, randomised BatchNorm statistics)\n")
    start = time.perf_counter()
    gm = trace(model)
    print(f"{'trace':22s} {describe(gm)}")
    for editor in canonicalisation_editors():
        gm = editor(gm)
        with torch.no_grad():
            diff = float((gm(x) - reference).abs().max() / reference.abs().max())
        print(f"{editor!r:22s} {describe(gm)} | max rel. diff {diff:.1e}")
    elapsed = time.perf_counter() - start
    ok = diff <= 1e-5
    print(f"\nfloat-equivalence (max |diff| <= 1e-5 x max |output|): {'OK' if ok else 'FAILED'} ({diff:.2e}); "
          f"{elapsed:.2f} s in all")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
