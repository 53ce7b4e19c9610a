"""Each defense's own training recipe, as a named preset with its source and the deviations that remain.

A :class:`Recipe` is a partial config (merged like the ``paper`` and ``quick``
presets of :mod:`ades_core.presets`: explicit options and a config file
override it) plus what a reader needs to trust it: the source it follows and,
one sentence each, where ades still differs. ``ades run --preset NAME``
prints the recipe it follows; docs/defenses.md ("Recipes") lists them.

Budgets are [0, 1] pixel scale; learning rates are SGD's.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class Recipe:
    """A defense's training recipe.

    Attributes:
        name: the preset's name (``ades run --preset NAME``).
        defense: the defense it trains (``config["defense"]``).
        source: the paper and code it follows.
        config: the partial config, nested like ``RunConfig.to_dict()``.
        deviations: where a run on this recipe still differs from the source.
    """

    name: str
    defense: str
    source: str
    config: dict[str, Any]
    deviations: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: which recipe, after which source."""
        return f"recipe {self.name}: {self.defense} as in {self.source}"


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to :data:`RECIPES`; a name taken twice is an error."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    if recipe.config.get("defense") != recipe.defense:
        raise ValueError(f"recipe {recipe.name!r}: config['defense'] must be {recipe.defense!r}")
    RECIPES[recipe.name] = recipe
    return recipe


register_recipe(Recipe(
    name="fast-at",
    defense="fast-at",
    source="Wong, Rice, Kolter, ICLR 2020 (locuslab/fast_adversarial, CIFAR10/train_fgsm.py)",
    config={
        "defense": "fast-at",
        "model": {"backbone": "ades_preact_resnet18"},
        "data": {"batch_size": 128},
        "budget": {"eps": 8 / 255},
        "attack": {"bn": "train"},
        "defense_options": {"fast_alpha_ratio": 1.25},
        "optim": {"epochs": 15, "lr": 0.2, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cyclic", "warmup": 0.5},
        "val": {"split": 1000, "early_stop_drop": 0.2},
        "eval": {"every": 1},
    },
    deviations=(
        "the early stop compares PGD-20 accuracy on 1,000 held-out training images with the best epoch's; "
        "the authors compare PGD-5 accuracy on one training minibatch with the previous epoch's",
        "mixed precision is --amp (bf16 on CUDA), the authors' is apex O2 with dynamic loss scaling",
    ),
))

register_recipe(Recipe(
    name="free-at",
    defense="free-at",
    source="Shafahi et al., NeurIPS 2019 (Adversarial training for free!), CIFAR-10 with m = 8",
    config={
        "defense": "free-at",
        "model": {"backbone": "ades_wrn34_10"},
        "data": {"batch_size": 128},
        "budget": {"eps": 8 / 255},
        "defense_options": {"replays": 8},
        "optim": {"epochs": 200, "lr": 0.1, "schedule": "multistep", "milestones": (0.5, 0.75)},
    },
    deviations=(
        "200 epochs at m = 8 are 25 passes over the data (the authors': about 205 / 8); "
        "ades's default 100 epochs give 13",
        "WRN-34-10, where the paper trains WRN-32-10",
        "the learning-rate decay at 50% and 75% of the passes follows common re-implementations, "
        "not the authors' TensorFlow code",
    ),
))

register_recipe(Recipe(
    name="awp-at",
    defense="pgd-at",
    source="Wu, Xia, Wang, NeurIPS 2020 (csdongxian/AWP, at-awp, on Rice et al.'s robust_overfitting code): PGD-AT with AWP",
    config={
        "defense": "pgd-at",
        "model": {"backbone": "ades_preact_resnet18"},
        "budget": {"eps": 8 / 255},
        "attack": {"steps": 10, "alpha": 2 / 255, "bn": "train"},
        "defense_options": {"awp": True, "awp_gamma": 1e-2, "awp_warmup": 0},
        "optim": {"epochs": 200, "lr": 0.1, "schedule": "multistep", "milestones": (0.5, 0.75)},
        "val": {"split": 1000},
    },
    deviations=(
        "the best checkpoint is chosen on 1,000 held-out training images; the authors select on the test set",
    ),
))

register_recipe(Recipe(
    name="awp-trades",
    defense="trades",
    source="Wu, Xia, Wang, NeurIPS 2020 (csdongxian/AWP, trades_AWP/train_trades_cifar.py): TRADES with AWP",
    config={
        "defense": "trades",
        "model": {"backbone": "ades_wrn34_10"},
        "budget": {"eps": 8 / 255},
        "attack": {"steps": 10, "alpha": 2 / 255, "bn": "eval"},
        "defense_options": {"beta": 6.0, "awp": True, "awp_gamma": 5e-3, "awp_warmup": 10},
        "optim": {"epochs": 200, "lr": 0.1, "schedule": "multistep", "milestones": (0.5, 0.75)},
        "val": {"split": 1000},
    },
    deviations=(
        "the best checkpoint is chosen on 1,000 held-out training images; the authors select on the test set",
    ),
))

register_recipe(Recipe(
    name="mma",
    defense="mma",
    source="Ding, Sharma, Lui, Huang, ICLR 2020 (BorealisAI/mma_training), MMA-32 L-inf on CIFAR-10",
    config={
        "defense": "mma",
        "defense_options": {
            "mma_max_eps": 32 / 255, "mma_min_eps": 0.005, "mma_clean_weight": 1 / 3,
            "mma_search_steps": 10, "mma_margin": "soft",
        },
        "attack": {"steps": 10},
    },
    deviations=(
        "the trained point is the smallest flipping radius found, the authors' the last bisection midpoint",
        "the margin search runs on the whole batch with the misclassified samples masked out",
    ),
))


def recipe_for_preset(name: str | None) -> Recipe | None:
    """The recipe a preset name stands for, or ``None`` (``paper``, ``quick``, no preset)."""
    return RECIPES.get(name) if name else None


__all__ = ["RECIPES", "Recipe", "recipe_for_preset", "register_recipe"]
