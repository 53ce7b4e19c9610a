"""Named presets: partial configs that explicit options override.

* ``paper``: the paper's setting (WRN-34-10, 100 epochs, PGD-10 training with
  alpha 2/255, SGD lr 0.1 decayed x0.1 at epochs 75 and 90, batch 128). Days
  on one GPU.
* ``quick``: the small CNN on a 2,000-image train subset and 500 test images,
  3 epochs of PGD-5: minutes on a 2-core CPU; for trying things, not results.
* each defense's own recipe (``fast-at``, ``free-at``, ``awp-at``, ``awp-trades``,
  ``mma``): :mod:`ades_core.recipes`, with its source and remaining deviations.
"""

from __future__ import annotations

from typing import Any

from ades_core.recipes import RECIPES

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "model": {"backbone": "ades_wrn34_10"},
        "data": {"batch_size": 128, "train_subset": None, "test_subset": None},
        "attack": {"steps": 10},  # alpha: the norm's default (2/255 for L-inf)
        "optim": {"epochs": 100, "lr": 0.1, "milestones": (0.75, 0.9)},
        "eval": {"steps": 20},
    },
    "quick": {
        "model": {"backbone": "ades_cnn_small"},
        "data": {"batch_size": 128, "train_subset": 2000, "test_subset": 500},
        "attack": {"steps": 5},
        "optim": {"epochs": 3},
        "eval": {"steps": 20},
    },
    **{name: recipe.config for name, recipe in RECIPES.items()},
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge: sections merge field by field, other keys are replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
