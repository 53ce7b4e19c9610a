"""Shared fixtures: the real CIFAR-10 image folder from ../shared/data, unpacked once."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

# The suite runs against the built-ins alone, whatever plugins this environment has installed
# (tests assert the exact registered sets); plugin tests load theirs explicitly or re-enable
# entry points in the subprocesses they start. Set before any test imports ades_core.
os.environ.setdefault("ADES_DISABLE_PLUGINS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ZIP = REPO_ROOT.parent / "shared" / "data" / "cifar10-imagefolder.zip"
CACHE_DIR = Path(os.environ.get("ADES_CACHE", Path.home() / ".cache" / "ades"))


def cifar10_folder_path() -> Path | None:
    """The unpacked CIFAR-10 image folder (train/, test/), unpacking it once if needed."""
    explicit = os.environ.get("ADES_CIFAR10_DIR")
    if explicit:
        return Path(explicit)
    target = CACHE_DIR / "cifar10-imagefolder"
    if (target / "train").is_dir() and (target / "test").is_dir():
        return target
    if not SHARED_ZIP.is_file():
        return None
    partial = CACHE_DIR / "cifar10-imagefolder.partial"
    with zipfile.ZipFile(SHARED_ZIP) as archive:
        archive.extractall(partial)
    partial.rename(target)
    return target


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    path = cifar10_folder_path()
    if path is None:
        pytest.fail(f"real CIFAR-10 is needed: {SHARED_ZIP} not found and ADES_CIFAR10_DIR unset")
    return path
