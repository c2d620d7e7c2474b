"""The ImageNet-style folder reader on tiny PNG and JPEG images: class order, the resize / centre-crop / normalise
transform pixel by pixel, lazy decoding, the train/val and the flat layouts, and an error naming each bad path."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from quantlib.data import DataError, ImageFolderDataset, ImageFolderError, data_source, image_folder_loaders
from quantlib.data.image_folder import MEAN, STD, eval_transform, image_folder_splits

WIDTH, HEIGHT = 20, 30


def gradient(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """[H, W, 3] uint8 where each pixel tells its place: red = 8 x column, green = 8 x row, blue = 77."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols * 8, rows * 8, np.full_like(rows, 77)], axis=-1).astype(np.uint8)


def normalised(rgb) -> torch.Tensor:
    """What the transform makes of uint8 RGB values [..., 3]: channels first, in [0, 1], ImageNet mean and std."""
    values = torch.from_numpy(np.array(rgb, dtype=np.float32)) / 255.0
    return ((values - torch.tensor(MEAN)) / torch.tensor(STD)).movedim(-1, 0)


def write_classes(root: Path) -> Path:
    """Three class folders, created out of order, with PNG (RGB and grey), JPEG and upper-case names; a text file."""
    for name in ("b_cat", "a_dog", "c_eel"):
        (root / name).mkdir(parents=True)
    Image.fromarray(gradient()).save(root / "b_cat" / "0.png")
    Image.new("RGB", (WIDTH, HEIGHT), (200, 40, 90)).save(root / "b_cat" / "1.JPG", quality=95)
    Image.new("L", (HEIGHT, WIDTH), 128).save(root / "a_dog" / "x.png")  # landscape, grey
    Image.new("RGB", (WIDTH, HEIGHT), (0, 255, 0)).save(root / "c_eel" / "y.jpeg", quality=95)
    (root / "c_eel" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def classes(tmp_path) -> Path:
    return write_classes(tmp_path / "flat")


@pytest.fixture
def train_val(tmp_path) -> Path:
    write_classes(tmp_path / "imagenet" / "train")
    write_classes(tmp_path / "imagenet" / "val")
    return tmp_path / "imagenet"


def test_sorted_class_names_give_the_labels_and_other_files_are_ignored(classes):
    data = ImageFolderDataset(classes, resize=20, crop=10)
    assert data.classes == ["a_dog", "b_cat", "c_eel"]
    assert data.class_to_idx == {"a_dog": 0, "b_cat": 1, "c_eel": 2}
    assert [(p.relative_to(classes).as_posix(), label) for p, label in data.samples] == [
        ("a_dog/x.png", 0), ("b_cat/0.png", 1), ("b_cat/1.JPG", 1), ("c_eel/y.jpeg", 2)]
    assert [data[i][1] for i in range(len(data))] == [0, 1, 1, 2]


def test_centre_crop_takes_the_middle_pixels(classes):
    data = ImageFolderDataset(classes, resize=20, crop=10)  # shorter side already 20: no resampling, exact pixels
    image, label = data[1]  # b_cat/0.png, the gradient
    assert label == 1 and image.shape == (3, 10, 10)
    # 20 x 30 cropped to 10 x 10: columns 5..14, rows 10..19
    assert torch.allclose(image, normalised(gradient()[10:20, 5:15]), atol=1e-6)
    assert image[:, 0, 0].tolist() == pytest.approx(
        [(40 / 255 - 0.485) / 0.229, (80 / 255 - 0.456) / 0.224, (77 / 255 - 0.406) / 0.225], abs=1e-6)


def test_resize_of_the_shorter_side_then_crop(classes):
    image = Image.fromarray(gradient())
    out = eval_transform(image, resize=10, crop=8)  # 20 x 30 -> 10 x 15 (bilinear) -> rows 4..11, columns 1..8
    resized = np.asarray(image.resize((10, 15), Image.Resampling.BILINEAR))
    assert out.shape == (3, 8, 8) and torch.allclose(out, normalised(resized[4:12, 1:9]), atol=1e-6)
    grey = ImageFolderDataset(classes, resize=10, crop=8)[0][0]  # 30 x 20 landscape grey 128 -> 15 x 10, RGB
    assert grey.shape == (3, 8, 8) and torch.allclose(grey, normalised(np.full((8, 8, 3), 128)))
    jpeg = ImageFolderDataset(classes, resize=10, crop=8)[3][0]  # uniform green JPEG: lossy, so nearly exact
    assert (jpeg - normalised([0, 255, 0]).reshape(3, 1, 1)).abs().max() < 3 / 255 / 0.224
    default = eval_transform(image)  # 256 / 224 by default
    assert default.shape == (3, 224, 224)


def test_images_are_decoded_on_access_only(classes, monkeypatch):
    opened = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(Path(path).name) or original(path, *a, **k))
    data = ImageFolderDataset(classes, resize=20, crop=10)
    assert len(data) == 4 and opened == []
    data[2]
    assert opened == ["1.JPG"]


def test_train_val_layout_and_loaders(train_val):
    train_loader, test_loader = image_folder_loaders(train_val, batch_size=3, seed=0, resize=20, crop=10)
    assert train_loader.dataset.root == train_val / "train" and test_loader.dataset.root == train_val / "val"
    x, y = next(iter(test_loader))
    assert x.shape == (3, 3, 10, 10) and y.tolist() == [0, 1, 1]  # ordered
    seen = sorted(label for _, labels in train_loader for label in labels.tolist())
    assert seen == [0, 1, 1, 2]
    orders = [[y.tolist() for _, y in image_folder_loaders(train_val, 4, seed=s, resize=20, crop=10)[0]]
              for s in (0, 0, 1, 2, 3)]
    assert orders[0] == orders[1] and any(o != orders[0] for o in orders[2:])  # shuffled, reproducibly


def test_a_folder_of_classes_is_both_evaluation_and_calibration_set(classes):
    train, test = image_folder_splits(classes, resize=20, crop=10)
    assert train is test and train.classes == ["a_dog", "b_cat", "c_eel"]
    source = data_source(f"imagenet:{classes}", batch_size=2)
    assert source.input_shape == (3, 224, 224) and source.num_classes == 3
    assert [b.shape for b in source.calibration_batches(5)] == [(2, 3, 224, 224), (2, 3, 224, 224)]


def test_errors_name_the_path_and_what_is_expected(tmp_path, classes, train_val):
    missing = tmp_path / "none"
    with pytest.raises(ImageFolderError, match=re.escape(f"Image folder '{missing}' does not exist; expected train/ "
                                                         f"and val/ folders, or one sub-folder of .jpg/.jpeg/.png")):
        image_folder_loaders(missing)
    with pytest.raises(ImageFolderError, match=re.escape(f"Image folder '{missing}' does not exist")):
        ImageFolderDataset(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("")
    with pytest.raises(ImageFolderError, match=re.escape(f"Image folder '{empty}' has no class sub-folders; "
                                                         f"expected one sub-folder of .jpg/.jpeg/.png images")):
        image_folder_loaders(empty)
    (classes / "d_fox").mkdir()
    (classes / "d_fox" / "fox.gif").write_bytes(b"GIF89a")
    with pytest.raises(ImageFolderError, match=re.escape(f"Class folder '{classes / 'd_fox'}' holds no images; "
                                                         f"expected .jpg, .jpeg or .png files.")):
        ImageFolderDataset(classes)
    (classes / "d_fox" / "fox.png").write_bytes(b"not a png")
    data = ImageFolderDataset(classes, resize=20, crop=10)  # lazy: the bad file is found when read
    with pytest.raises(ImageFolderError, match=re.escape(f"Image '{classes / 'd_fox' / 'fox.png'}' cannot be read "
                                                         f"as a JPEG or PNG image")):
        data[4]
    with pytest.raises(ValueError, match="Image crop 30 must be between 1 and the resize 20"):
        ImageFolderDataset(classes, resize=20, crop=30)


def test_train_val_must_come_together_and_match(train_val):
    (train_val / "val" / "c_eel" / "y.jpeg").rename(train_val / "y.jpeg")
    (train_val / "val" / "c_eel" / "notes.txt").unlink()
    (train_val / "val" / "c_eel").rmdir()
    with pytest.raises(ImageFolderError, match=r"have different classes \(3 and 2; 'c_eel' is in one only\)"):
        image_folder_loaders(train_val)
    (train_val / "val").rename(train_val / "elsewhere")
    with pytest.raises(ImageFolderError, match=re.escape(f"Image folder '{train_val}' has train/ but no val/; "
                                                         f"expected both")):
        image_folder_loaders(train_val)
    with pytest.raises(DataError, match="has train/ but no val/"):  # a ValueError: the command lines exit with 2
        data_source(f"imagenet:{train_val}")
