"""``python -m quantlib.cli.constructs``: print the table of the constructs each target takes (the README's)."""

from quantlib.backends.diana.target import DIANA
from quantlib.supported_constructs import construct_table
from quantlib.targets import INTEGER_ONNX

TARGETS = (DIANA, INTEGER_ONNX)
"""The README's columns: DIANA, then the generic integer ONNX target."""

if __name__ == "__main__":
    print(construct_table(TARGETS), end="")
