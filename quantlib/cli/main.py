"""``quantlib``: one command, a subcommand per job. ``quantlib export`` is ``quantlib-export``; ``quantlib ptq``
quantises a trained model post-training and compares methods; ``quantlib train`` trains a switchable-precision
model; ``quantlib distil`` trains distillation chains; ``quantlib pow2`` runs the power-of-two pipeline. Each
subcommand's module is imported only when asked for."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS = {"export": "quantlib.cli.export", "ptq": "quantlib.cli.ptq", "train": "quantlib.cli.train",
               "distil": "quantlib.cli.distil", "pow2": "quantlib.cli.pow2"}
"""Subcommand -> the module whose ``main(argv) -> exit code`` runs it."""

USAGE = f"""usage: quantlib {{{','.join(SUBCOMMANDS)}}} [options]

  quantlib export CHECKPOINT --target diana|onnx   a checkpoint in, a target's deliverable out (= quantlib-export)
  quantlib ptq [--method M ...] [--n-bits-w W ...]  post-training quantisation: methods and bit-widths compared
  quantlib train --yaml-path CFG                    joint mixed-precision training: one model, many bit-widths
  quantlib distil --chain 32/32,8/8,4/4              distillation chains across bit-widths
  quantlib pow2 ptq|qat --config CFG                power-of-two scales: PTQ -> weight-only QAT -> final PTQ

quantlib SUBCOMMAND --help lists a subcommand's options."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f"quantlib: error: unknown subcommand {argv[0]!r}; choose one of {list(SUBCOMMANDS)}.\n\n{USAGE}",
              file=sys.stderr)
        return 2
    return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
