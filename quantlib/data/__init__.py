"""Data sets: the bundled digits (default) and CIFAR-10 from a user-given folder."""

from quantlib.data.cifar10 import CifarError, cifar10_loaders, load_cifar10
from quantlib.data.digits import digits_loaders, load_digits_tensors
from quantlib.data.sources import DataSource, data_source

__all__ = ["CifarError", "DataSource", "cifar10_loaders", "data_source", "digits_loaders", "load_cifar10",
           "load_digits_tensors"]
