"""Data sets: the bundled digits (default); CIFAR-10, CIFAR-100 and ImageNet-style image folders from user-given
folders. Their errors are ``DataError`` (a ValueError), naming the path and what was expected."""

from quantlib.data.cifar10 import cifar10_loaders, load_cifar10
from quantlib.data.cifar100 import cifar100_loaders, load_cifar100
from quantlib.data.digits import digits_loaders, load_digits_tensors
from quantlib.data.errors import CifarError, DataError, ImageFolderError
from quantlib.data.image_folder import ImageFolderDataset, image_folder_loaders
from quantlib.data.sources import DataSource, data_source

__all__ = ["CifarError", "DataError", "DataSource", "ImageFolderDataset", "ImageFolderError", "cifar100_loaders",
           "cifar10_loaders", "data_source", "digits_loaders", "image_folder_loaders", "load_cifar10", "load_cifar100",
           "load_digits_tensors"]
