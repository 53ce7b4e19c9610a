"""A small valid image folder and the options of a seconds-long ``ades run`` on it."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

GOOD = {"train": {"cat": 4, "dog": 4}, "test": {"cat": 2, "dog": 2}}
"""``layout[split][class]``: image counts of the valid folder."""

TINY_RUN = [
    "--defense", "pgd-at", "--backbone", "ades_cnn_small", "--dataset", "imagefolder", "--epochs", "1",
    "--batch-size", "4", "--steps", "1", "--eval-steps", "1", "--device", "cpu", "--quiet",
]  # fmt: skip
"""``ades run`` options of a one-epoch PGD-1 run on the small CNN (add --data-dir and --out)."""


def write_images(root: Path, layout: dict[str, dict[str, int]], size: int = 32) -> Path:
    """``layout[split][class]`` random RGB PNGs of ``size`` x ``size`` under ``root``; returns ``root``."""
    generator = torch.Generator().manual_seed(0)
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)
                # Pillow, not torchvision.io.write_png (deprecated in torchvision 0.29)
                Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB").save(root / split / name / f"{k}.png")
    return root
