"""ImageNet-style image folders: one sub-folder of JPEG/PNG images per class, labels 0..K-1 in the sorted order of
the class names (as torchvision's ImageFolder). A root holds ``train/`` and ``val/`` such folders, or is one itself.

Images are decoded when accessed (Pillow, RGB) and given the standard evaluation transform, written here with Pillow
and torch: shorter side resized to 256 (bilinear), centre crop 224, [0, 1], ImageNet mean and std.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from quantlib.data.errors import ImageFolderError

__all__ = ["IMAGE_EXTENSIONS", "MEAN", "STD", "ImageFolderDataset", "eval_transform", "image_folder_loaders",
           "image_folder_splits"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_EXPECTED = "one sub-folder of .jpg/.jpeg/.png images per class"


def eval_transform(image: Image.Image, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """``image`` as a normalised [3, crop, crop] tensor: shorter side resized to ``resize`` (bilinear), centre crop."""
    image = image.convert("RGB")
    width, height = image.size
    if width <= height:
        size = (resize, int(resize * height / width))
    else:
        size = (int(resize * width / height), resize)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    left = int(round((size[0] - crop) / 2.0))
    top = int(round((size[1] - crop) / 2.0))
    pixels = np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.float32)
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1) / 255.0
    return (tensor - torch.tensor(MEAN).reshape(3, 1, 1)) / torch.tensor(STD).reshape(3, 1, 1)


def _images_of(folder: Path) -> list[Path]:
    """The image files under ``folder`` (sub-folders too), in torchvision's order."""
    found = []
    for parent, _, names in sorted(os.walk(folder, followlinks=True)):
        found += [Path(parent) / n for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
    return found


class ImageFolderDataset(Dataset):
    """(image [3, crop, crop], label) of the class folders in ``root``; images are decoded on access, not held."""

    def __init__(self, root: str | os.PathLike, resize: int = 256, crop: int = 224) -> None:
        if not 1 <= crop <= resize:
            raise ValueError(f"Image crop {crop} must be between 1 and the resize {resize} (the shorter side).")
        self.root, self.resize, self.crop = Path(root), resize, crop
        if not self.root.is_dir():
            raise ImageFolderError(f"Image folder '{self.root}' does not exist; expected a folder with {_EXPECTED}.")
        self.classes = sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir())
        if not self.classes:
            raise ImageFolderError(f"Image folder '{self.root}' has no class sub-folders; expected {_EXPECTED}.")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for name, label in self.class_to_idx.items():
            images = _images_of(self.root / name)
            if not images:
                raise ImageFolderError(f"Class folder '{self.root / name}' holds no images; expected .jpg, .jpeg "
                                       f"or .png files.")
            self.samples += [(path, label) for path in images]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageFolderError(f"Image '{path}' cannot be read as a JPEG or PNG image: {exc}.") from exc
        return eval_transform(rgb, self.resize, self.crop), label


def image_folder_splits(path: str | os.PathLike, resize: int = 256,
                        crop: int = 224) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """(train, test) of ``path``: its ``train/`` and ``val/`` folders, or, without them, ``path`` itself as both."""
    root = Path(path)
    if not root.is_dir():
        raise ImageFolderError(f"Image folder '{root}' does not exist; expected train/ and val/ folders, or "
                               f"{_EXPECTED}.")
    train_dir, val_dir = root / "train", root / "val"
    if train_dir.is_dir() != val_dir.is_dir():
        present, absent = ("train", "val") if train_dir.is_dir() else ("val", "train")
        raise ImageFolderError(f"Image folder '{root}' has {present}/ but no {absent}/; expected both, or pass a "
                               f"folder with {_EXPECTED}.")
    if not train_dir.is_dir():
        data = ImageFolderDataset(root, resize, crop)
        return data, data
    train, test = ImageFolderDataset(train_dir, resize, crop), ImageFolderDataset(val_dir, resize, crop)
    if train.classes != test.classes:
        only = sorted(set(train.classes) ^ set(test.classes))[0]
        raise ImageFolderError(f"Image folders '{train_dir}' and '{val_dir}' have different classes "
                               f"({len(train.classes)} and {len(test.classes)}; '{only}' is in one only); expected "
                               f"the same class folders in both.")
    return train, test


def image_folder_loaders(path: str | os.PathLike, batch_size: int = 64, seed: int = 0, resize: int = 256,
                         crop: int = 224) -> tuple[DataLoader, DataLoader]:
    """Shuffled (order set by ``seed``) training and ordered test loaders, both with the evaluation transform: the
    training loader serves PTQ calibration, which wants undistorted images. Folders as in ``image_folder_splits``."""
    train, test = image_folder_splits(path, resize, crop)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)),
            DataLoader(test, batch_size=batch_size))
