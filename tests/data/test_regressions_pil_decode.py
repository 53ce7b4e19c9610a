"""Regression: image folders are decoded by Pillow, not by torchvision's deprecated image I/O.

``torchvision.io.decode_image`` is deprecated in torchvision 0.29 (its image
I/O moves to TorchCodec) and warned on every decode. The ``imagefolder``
dataset now decodes with Pillow as torchvision's ``default_loader`` does
(``Image.open(path).convert("RGB")``) into the same uint8 ``(N, 3, H, W)``
tensors, decoded once: bit-identical to the old decoder on PNG and on the
real CIFAR-10 JPEGs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.io
from PIL import Image

from ades_core.data import DataError, DataRequest, load_datasets
from ades_core.data.datasets import load_test_split
from ades_core.data.imagefolder import _list_split


def _write_png(path: Path, image: torch.Tensor, mode: str = "RGB") -> None:
    """``image`` uint8 ``(3, H, W)`` as a PNG (``mode`` "L", "P" or "RGBA" converts it first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB").convert(mode).save(path)


def _expected(path: Path) -> torch.Tensor:
    """What Pillow makes of ``path`` in RGB, as uint8 ``(3, H, W)``."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def _old_decode(path: Path) -> torch.Tensor:
    """The old path: ``torchvision.io.decode_image`` in RGB (skipped once torchvision drops it)."""
    decode = getattr(torchvision.io, "decode_image", None)
    if decode is None:
        pytest.skip("torchvision.io.decode_image is gone: nothing to compare with")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode(str(path), mode=torchvision.io.ImageReadMode.RGB)


def _folder(root: Path) -> dict[str, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    written: dict[str, list[torch.Tensor]] = {"train": [], "test": []}
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            for k in range(count):
                image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8, generator=generator)
                _write_png(root / split / name / f"{k}.png", image)
                written[split].append(image)
    return written


def test_loading_uses_no_torchvision_image_io_and_warns_nothing(tmp_path, monkeypatch):
    written = _folder(tmp_path)

    def deprecated(*args, **kwargs):
        raise AssertionError("torchvision.io decoded an image")

    for name in ("decode_image", "decode_png", "decode_jpeg", "read_image", "read_file"):
        if hasattr(torchvision.io, name):
            monkeypatch.setattr(torchvision.io, name, deprecated)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = load_datasets("imagefolder", DataRequest(root=tmp_path))
    images = splits.train.images
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 5, 7) and images.is_contiguous()
    assert torch.equal(images, torch.stack(written["train"]))  # PNG: exactly the stored pixels
    assert torch.equal(splits.test.images, torch.stack(written["test"]))


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA"])
def test_png_decodes_bit_identically_to_the_old_decoder(tmp_path, mode):
    image = torch.randint(0, 256, (3, 6, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for split in ("train", "test"):
        _write_png(tmp_path / split / "a" / "0.png", image, mode)
    path = tmp_path / "train" / "a" / "0.png"
    loaded = load_datasets("imagefolder", DataRequest(root=tmp_path)).train.images[0]
    assert torch.equal(loaded, _expected(path))
    assert torch.equal(loaded, _old_decode(path))


def test_real_cifar10_images_decode_bit_identically_to_the_old_decoder(cifar10_dir):
    request = DataRequest(root=cifar10_dir, test_subset=40, subset_order="first")
    loaded = load_test_split("imagefolder", request)
    _, samples = _list_split(Path(cifar10_dir) / "test", "test")
    paths = [Path(p) for p, _ in samples[:40]]
    assert loaded.images.shape == (40, 3, 32, 32) and loaded.images.dtype == torch.uint8
    assert torch.equal(loaded.images, torch.stack([_old_decode(p) for p in paths]))


def test_a_truncated_image_is_a_one_line_error(tmp_path):
    _folder(tmp_path)
    broken = tmp_path / "train" / "cat" / "0.png"
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(DataError, match=f"could not decode {broken}: .*; remove or replace the file") as info:
        load_datasets("imagefolder", DataRequest(root=tmp_path))
    assert "\n" not in str(info.value)


def test_a_file_that_is_no_image_says_so(tmp_path):
    _folder(tmp_path)
    bogus = tmp_path / "test" / "dog" / "bogus.png"
    bogus.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"could not decode {bogus}: Unsupported image file; remove or replace"):
        load_datasets("imagefolder", DataRequest(root=tmp_path))
