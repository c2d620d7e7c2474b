"""Data sets: the bundled digits (default) and CIFAR-10 from a user-given folder."""

from quantlib.data.digits import digits_loaders, load_digits_tensors

__all__ = ["digits_loaders", "load_digits_tensors"]
