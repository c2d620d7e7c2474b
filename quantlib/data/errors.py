"""Errors of the data readers: a folder or file that cannot be used. Each message names the path and says what was
expected. ``DataError`` is a ValueError too, so a command line reports it as a usage error (exit code 2)."""

from quantlib.errors import QuantlibError


class DataError(QuantlibError, ValueError):
    """A data folder or file cannot be used."""


class CifarError(DataError):
    """A CIFAR-10 or CIFAR-100 folder or file cannot be used."""


class ImageFolderError(DataError):
    """An image folder (one sub-folder of images per class) or one of its images cannot be used."""
