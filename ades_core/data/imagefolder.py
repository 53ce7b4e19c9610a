"""The ``imagefolder`` dataset: ``root/train/<class>/*`` and ``root/test/<class>/*``, decoded once.

Images are listed per split (labels follow the sorted class folders), a
subset is drawn before anything is decoded, and the chosen files are decoded
by Pillow into RGB uint8 tensors ``(N, 3, H, W)`` in threads (see
:mod:`ades_core.data.datasets` for the splits' contract).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from ades_core.data.datasets import (
    DataError,
    DataRequest,
    DatasetSplits,
    ImageTensors,
    _channel_stats,
    _resize,
    subset_indices,
)
from ades_core.registries import DATASETS

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".gif", ".webp")
"""Extensions the ``imagefolder`` dataset reads (decoded by Pillow, as torchvision's ``default_loader``)."""

DECODE_THREADS = 4
"""Threads decoding an image folder; Pillow's decoders release the GIL."""


def _list_split(folder: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and ``(path, label)`` samples of one split folder."""
    from torchvision.datasets.folder import find_classes, make_dataset

    if not folder.is_dir():
        raise DataError(
            f"{folder} is missing; an image folder needs train/ and test/ subfolders "
            "each holding one folder of images per class"
        )
    try:
        classes, class_to_idx = find_classes(folder)
    except FileNotFoundError:
        raise DataError(
            f"the {split} split {folder} holds no class folders; "
            f"put its images in {folder}/<class>/"
        ) from None
    samples = make_dataset(folder, class_to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DataError(
            f"the {split} split {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) "
            "in its class folders"
        )
    return classes, samples


def _name_some(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _decode_reason(exc: BaseException) -> str:
    """The first sentence of a decoder error (one line, without the path Pillow repeats)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "Unsupported image file"  # Pillow's "cannot identify image file '<path>'"
    text = " ".join(str(exc).split())
    sentence = text.split(". ")[0].rstrip(".")
    return sentence if sentence else type(exc).__name__


def _decode_one(path: str, image_size: int | None) -> Tensor:
    """The image at ``path`` as RGB uint8 ``(3, H, W)``, resized to ``image_size`` if given.

    Decoded by Pillow as torchvision's ``default_loader`` does (``Image.open``,
    ``convert("RGB")``): grey, palette and alpha images become three channels,
    an animated GIF its first frame. For PNG (lossless) the pixels are exactly
    the stored ones; for JPEG they match torchvision's own decoder bit for bit
    on CIFAR-10 (the same libjpeg-turbo).
    """
    from PIL import Image

    try:
        with Image.open(path) as opened:
            rgb = opened.convert("RGB")  # decodes the whole image: a truncated file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"could not decode {path}: {_decode_reason(exc)}; remove or replace the file "
            f"(readable: {', '.join(IMAGE_EXTENSIONS)})"
        ) from None
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    image = pixels.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()
    return _resize(image, image_size)


def _decode_all(paths: Sequence[str], image_size: int | None, split: str, folder: Path) -> Tensor:
    """Decode ``paths`` into one uint8 ``(N, 3, H, W)`` tensor, in chunks on a thread pool."""
    first = _decode_one(paths[0], image_size)
    out = torch.empty((len(paths), *first.shape), dtype=torch.uint8)
    out[0] = first

    def decode_range(start: int, stop: int) -> tuple[str, tuple[int, ...]] | None:
        for i in range(start, stop):
            image = _decode_one(paths[i], image_size)
            if image.shape != first.shape:
                return paths[i], tuple(image.shape)
            out[i] = image
        return None

    chunk = max(64, math.ceil(len(paths) / (DECODE_THREADS * 8)))
    ranges = [(s, min(s + chunk, len(paths))) for s in range(1, len(paths), chunk)]
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        mismatches = [m for m in pool.map(lambda r: decode_range(*r), ranges) if m is not None]
    if mismatches:
        path, shape = mismatches[0]
        raise DataError(
            f"images in the {split} split {folder} have different sizes ({_hw(first.shape)} in "
            f"{paths[0]}, {_hw(shape)} in {path}); pass an image size (image_size, --image-size) "
            "to resize them all to one square size"
        )
    return out


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[-2]}x{shape[-1]}"


def _image_folder_root(request: DataRequest) -> Path:
    root = request.root
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist; pass --data-dir to a folder with train/ and "
            "test/ subfolders, each holding one folder of images per class"
        )
    return root


def _decode_split(
    root: Path, split: str, listed: tuple[list[str], list[tuple[str, int]]], request: DataRequest
) -> ImageTensors:
    """Decode the (subset of the) listed samples of ``root/split`` into an :class:`ImageTensors`."""
    classes, samples = listed
    subset = request.train_subset if split == "train" else request.test_subset
    chosen = subset_indices(len(samples), subset, request.seed, split, order=request.subset_order)
    if chosen is not None:
        samples = [samples[i] for i in chosen.tolist()]
    images = _decode_all([p for p, _ in samples], request.image_size, split, root / split)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return ImageTensors(images, labels, tuple(classes))


def imagefolder_test(request: DataRequest) -> ImageTensors:
    """The ``test/`` split of an image folder alone; ``train/`` is neither listed nor decoded.

    Labels follow the sorted class folders of ``test/`` (the full loader checks
    that ``train/`` holds the same ones; this one cannot, so an evaluation
    compares the classes with those the model was trained on instead).
    """
    root = _image_folder_root(request)
    return _decode_split(root, "test", _list_split(root / "test", "test"), request)


@DATASETS.register(
    "imagefolder",
    description="any root/train/<class>/*.jpg|png and root/test/<class>/* image folder",
    paper="",
    test_split=imagefolder_test,
)
def imagefolder(request: DataRequest) -> DatasetSplits:
    """An image folder in torchvision's ImageFolder layout, decoded to RGB.

    ``root/train/<class>/<images>`` and ``root/test/<class>/<images>``, with the
    same class folders in both; labels follow the sorted class names. Mean and
    std are computed from the (subset of the) train images.
    """
    root = _image_folder_root(request)
    listed = {split: _list_split(root / split, split) for split in ("train", "test")}
    train_classes, test_classes = listed["train"][0], listed["test"][0]
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"train and test classes of {root} differ: "
            f"only in train: {_name_some(only_train) or '(none)'}; "
            f"only in test: {_name_some(only_test) or '(none)'}"
        )

    splits = {split: _decode_split(root, split, listed[split], request) for split in ("train", "test")}
    if request.image_size is None and splits["train"].image_shape != splits["test"].image_shape:
        raise DataError(
            f"train images of {root} are {_hw(splits['train'].image_shape)} but test images are "
            f"{_hw(splits['test'].image_shape)}; pass an image size (image_size, --image-size) "
            "to resize them all to one square size"
        )
    mean, std = _channel_stats(splits["train"].images)
    if not all(s > 0 for s in std):
        raise DataError(
            f"the train images of {root} have a constant channel (std {std}); "
            "they cannot be normalised"
        )
    return DatasetSplits("imagefolder", splits["train"], splits["test"], mean, std)
