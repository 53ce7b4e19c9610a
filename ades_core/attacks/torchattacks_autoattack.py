"""torchattacks' re-implementation of AutoAttack, kept as the named alternative ``autoattack-torchattacks``.

The default ``autoattack`` is the authors' code (:mod:`ades_core.attacks.autoattack`).
This one comes from ``torchattacks==3.5.1`` (optional: ``pip install --no-deps
torchattacks==3.5.1``; its metadata pins an old ``requests`` it never imports)
and is here to compare against, not to report: it differs from the official
code in Square's square-size schedule (its squares shrink twice as fast) and,
above 10 classes, in the number of target classes of APGD-T and FAB-T
(``n_classes - 1`` instead of 9). docs/evaluation.md gives a side-by-side
measurement.

torchattacks' ``version='standard'`` runs APGD and FAB for 10 iterations; the
paper's standard version uses 100, which ``iterations=100`` (the default)
restores. Per-sample budgets, model modes, frozen parameters and the random
state are handled by :class:`~ades_core.attacks.scalar_budget.ScalarBudgetAttack`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from typing import Any

import torch
from torch import Tensor, nn

from ades_core.attacks.scalar_budget import MissingDependencyError, ScalarBudgetAttack
from ades_core.config import AttackOptions
from ades_core.registries import ATTACKS

TORCHATTACKS_VERSION = "3.5.1"
"""The torchattacks release this adapter is written and tested against."""

INSTALL_HINT = (
    f"pip install --no-deps torchattacks=={TORCHATTACKS_VERSION} scipy tqdm "
    "(--no-deps keeps your requests/urllib3; torchattacks never imports requests)"
)


def torchattacks_available() -> bool:
    return importlib.util.find_spec("torchattacks") is not None


def torchattacks_version() -> str | None:
    """The installed torchattacks version, or ``None``."""
    try:
        return importlib.metadata.version("torchattacks")
    except importlib.metadata.PackageNotFoundError:
        return None


def _torchattacks() -> Any:
    try:
        return importlib.import_module("torchattacks")
    except ImportError as exc:
        raise MissingDependencyError(f"this attack needs torchattacks: {INSTALL_HINT} ({exc})") from None


class TorchattacksAutoAttack(ScalarBudgetAttack):
    """torchattacks' AutoAttack (L-inf): APGD-CE, APGD-T, FAB-T, Square.

    Args:
        version: torchattacks' version name: ``standard``, ``plus`` or ``rand``.
        iterations: iterations of APGD-CE, APGD-T and FAB-T (the paper's 100);
            ``None`` keeps torchattacks' own default (10).
        square_queries: queries of its Square component (the paper's 5,000).
        seed, n_classes: as for :class:`~ades_core.attacks.autoattack.AutoAttack`;
            targets of APGD-T and FAB-T: ``n_classes - 1``.
    """

    name = "autoattack-torchattacks"

    def __init__(
        self,
        *,
        version: str = "standard",
        iterations: int | None = 100,
        square_queries: int = 5000,
        seed: int | None = None,
        n_classes: int | None = None,
    ) -> None:
        super().__init__(seed=seed, n_classes=n_classes)
        if not torchattacks_available():
            raise MissingDependencyError(f"the {self.name!r} attack needs torchattacks: {INSTALL_HINT}")
        if square_queries < 1:
            raise ValueError(f"AutoAttack square_queries must be >= 1, got {square_queries}")
        if version not in ("standard", "plus", "rand"):
            raise ValueError(f"AutoAttack version {version!r} is not one of: standard, plus, rand")
        if iterations is not None and iterations < 1:
            raise ValueError(f"AutoAttack iterations must be >= 1, got {iterations}")
        self.version = version
        self.iterations = iterations
        self.square_queries = square_queries

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "implementation": f"torchattacks=={torchattacks_version()}",
            "version": self.version,
            "norm": "Linf",
            "components": ["apgd-ce", "apgd-t", "fab-t", "square"] if self.version == "standard" else self.version,
            "iterations": self.iterations if self.iterations is not None else "torchattacks default (10)",
            "square_queries": self.square_queries,
            "standard": False,
        }

    def attack_group(self, model: nn.Module, x: Tensor, y: Tensor, eps: float, n_classes: int, seed: int) -> Tensor:
        if n_classes < 4:
            raise ValueError(
                f"AutoAttack needs at least 4 classes (APGD-T's targeted DLR loss reads the "
                f"4th-largest logit), the model has {n_classes}"
            )
        ta = _torchattacks()
        attack = ta.AutoAttack(model, norm="Linf", eps=eps, version=self.version, n_classes=n_classes, seed=seed)
        components = getattr(getattr(attack, "_autoattack", None), "attacks", None)
        if components is None:
            raise RuntimeError(
                f"torchattacks {torchattacks_version()} lays AutoAttack out differently from "
                f"{TORCHATTACKS_VERSION}; install torchattacks=={TORCHATTACKS_VERSION}"
            )
        for component in components:
            if self.iterations is not None and isinstance(component, (ta.APGD, ta.APGDT, ta.FAB)):
                component.steps = self.iterations
            if isinstance(component, ta.Square):
                component.n_queries = self.square_queries
        attack.set_device(x.device)
        return attack(x, y)


@ATTACKS.register(
    "autoattack-torchattacks",
    description="torchattacks 3.5.1's re-implementation of AutoAttack (100 iterations), for comparison",
    paper="Croce & Hein 2020",
    training=False,
)
def torchattacks_autoattack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> TorchattacksAutoAttack:
    """steps, alpha, random_start and loss do not apply; runs in float32 (no autocast)."""
    return TorchattacksAutoAttack()
