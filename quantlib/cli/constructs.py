"""``python -m quantlib.cli.constructs``: print the table of the constructs each target takes (the README's)."""

from quantlib.supported_constructs import construct_table

if __name__ == "__main__":
    print(construct_table(), end="")
