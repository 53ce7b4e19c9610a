"""What the CUDA tests share: their marks, a small image folder, and the sync-debug guard.

Every module in tests/cuda sets ``pytestmark = CUDA_TESTS``: marked ``cuda``
(``pytest -m cuda`` selects them) and skipped, with the reason, where torch
sees no GPU. They need no dataset: the images are written into a temporary
folder, so they run on a bare GPU machine with only this repository.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.cli.tiny_runs import write_images

NO_GPU = "needs a CUDA GPU: torch.cuda.is_available() is False on this machine"

CUDA_TESTS = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)]
"""The marks of every CUDA test module: ``pytestmark = CUDA_TESTS``."""

CLASSES = "abcd"
"""Four classes: enough for every defense and for AutoAttack's targeted attacks (which need 4)."""


def image_folder(root: Path, *, train_per_class: int = 8, test_per_class: int = 2) -> Path:
    """An image folder of random 32x32 RGB PNGs under ``root`` (train/ and test/, :data:`CLASSES`)."""
    return write_images(
        root,
        {"train": dict.fromkeys(CLASSES, train_per_class), "test": dict.fromkeys(CLASSES, test_per_class)},
    )


def tiny_run_config(data_dir: Path, **overrides) -> dict:
    """A run config (as ``RunConfig.from_dict`` takes it) of a seconds-long CUDA run of the small CNN."""
    raw = {
        "device": "cuda",
        "model": {"backbone": "ades_cnn_small"},
        "data": {"dataset": "imagefolder", "data_dir": str(data_dir), "batch_size": 8},
        "attack": {"steps": 2},
        "optim": {"epochs": 1},
        "eval": {"steps": 2, "batch_size": 8},
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return raw


@contextlib.contextmanager
def sync_is_an_error() -> Iterator[None]:
    """Inside, any host-device synchronisation raises (``torch.cuda.set_sync_debug_mode("error")``).

    The device is synchronised before (work queued earlier does not count)
    and the mode is always put back to ``default``.
    """
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
