"""The official AutoAttack (Croce & Hein 2020) and its Square, behind the :class:`BudgetedAttack` protocol.

The attacks come from ``pyautoattack==0.2.0``, the authors' code repackaged
for PyPI (its attack files are those of github.com/fra31/auto-attack; only the
wrapper's API differs); RobustBench evaluates with the same code. Nothing of
the attacks is written again here: :class:`AutoAttack` builds the library's own
``AutoAttack`` object for each group of equal budgets and calls its
``run_standard_evaluation``, so the components, their order and every
setting are the authors':

=============  ==============================================================
``standard``   APGD-CE (100 iterations, 1 restart), APGD-T (DLR, 9 target
               classes), FAB-T (9 targets), Square (5,000 queries, the
               authors' square-size schedule); each later attack runs only on
               the points the earlier ones did not break
``plus``       APGD-CE and APGD-DLR with 5 restarts, FAB (5 restarts), Square,
               APGD-T, FAB-T: slower, for a second opinion
``rand``       APGD-CE and APGD-DLR with 20 EOT samples per step: for
               randomised models
=============  ==============================================================

What the adapter adds (:class:`~ades_core.attacks.scalar_budget.ScalarBudgetAttack`):
per-sample budgets grouped into equal values, the model in eval mode with every
submodule's mode restored, parameters frozen, the caller's random stream left
alone. Whether a sample is robust is *not* read from the library's flags: the
evaluation re-checks every returned image with the model
(:func:`~ades_core.evaluation.runner.attack_outcome`).

The library's own sanity checks (randomised or dynamic model, probabilities
instead of logits, too few classes, Square beating the gradient attacks) are
captured from its ``auto-attack`` logger and reported in :meth:`settings`
(``official_flags``), instead of printed once per batch.

With fewer than 10 classes the targeted attacks use ``n_classes - 1`` targets
(the library would ask for 9 that do not exist); ``settings()`` says so.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ades_core.attacks.scalar_budget import MissingDependencyError, ScalarBudgetAttack
from ades_core.config import AttackOptions
from ades_core.registries import ATTACKS

PYAUTOATTACK_VERSION = "0.2.0"
"""The pyautoattack release this adapter is written and tested against (pinned in pyproject.toml)."""

STANDARD_ITERATIONS = 100
STANDARD_SQUARE_QUERIES = 5000
STANDARD_TARGET_CLASSES = 9
VERSIONS = ("standard", "plus", "rand")
COMPONENTS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}


def _pyautoattack() -> Any:
    try:
        import pyautoattack
    except ImportError as exc:
        raise MissingDependencyError(
            f"the official AutoAttack needs pyautoattack: pip install pyautoattack=={PYAUTOATTACK_VERSION} ({exc})"
        ) from None
    return pyautoattack


def pyautoattack_available() -> bool:
    """Whether the official AutoAttack can be imported."""
    return importlib.util.find_spec("pyautoattack") is not None


def pyautoattack_version() -> str | None:
    """The installed pyautoattack version, or ``None``."""
    try:
        return importlib.metadata.version("pyautoattack")
    except importlib.metadata.PackageNotFoundError:
        return None


def implementation() -> str:
    """``pyautoattack==<version>``: the implementation name ``eval.json`` records."""
    return f"pyautoattack=={pyautoattack_version()}"


class _Collect(logging.Handler):
    def __init__(self, sink: set[str]) -> None:
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.add(record.getMessage())


@contextlib.contextmanager
def captured_flags(sink: set[str]) -> Iterator[None]:
    """The library's warnings (its ``auto-attack`` logger) go into ``sink``, not to the terminal."""
    logger = logging.getLogger("auto-attack")
    handler = _Collect(sink)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class AutoAttack(ScalarBudgetAttack):
    """The official AutoAttack from ``pyautoattack``, L-inf or L2 (the authors' ``norm="Linf"`` / ``"L2"``;
    RobustBench's L2 leaderboard runs the L2 version at eps 0.5).

    Args:
        norm: ``linf`` or ``l2`` (:data:`~ades_core.norms.NORMS`).
        version: ``standard`` (the leaderboards'), ``plus`` or ``rand``
            (randomised models: expectation over 20 transformations per step).
        iterations: iterations of the APGD and FAB components; ``None`` keeps
            the authors' 100. Fewer only for cheap tests: the report then
            says the run was not standard.
        square_queries: queries of Square; ``None`` keeps the authors' 5,000.
        seed: seed of the components' random starts; ``None`` draws one per
            call from the caller's torch generator.
        n_classes: number of classes; ``None`` reads it from the model.
    """

    name = "autoattack"

    def __init__(
        self,
        *,
        version: str = "standard",
        iterations: int | None = None,
        square_queries: int | None = None,
        seed: int | None = None,
        n_classes: int | None = None,
        norm: str = "linf",
    ) -> None:
        super().__init__(seed=seed, n_classes=n_classes, norm=norm)
        if version not in VERSIONS:
            raise ValueError(f"AutoAttack version {version!r} is not one of: {', '.join(VERSIONS)}")
        if iterations is not None and iterations < 1:
            raise ValueError(f"AutoAttack iterations must be >= 1, got {iterations}")
        if square_queries is not None and square_queries < 1:
            raise ValueError(f"AutoAttack square_queries must be >= 1, got {square_queries}")
        _pyautoattack()
        self.version = version
        self.iterations = iterations
        self.square_queries = square_queries
        self.flags: set[str] = set()
        self.target_classes: int | None = None

    @property
    def standard(self) -> bool:
        """The authors' settings throughout (what a leaderboard entry needs)."""
        return (
            self.version == "standard"
            and self.iterations in (None, STANDARD_ITERATIONS)
            and self.square_queries in (None, STANDARD_SQUARE_QUERIES)
            and self.target_classes in (None, STANDARD_TARGET_CLASSES)
        )

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "implementation": implementation(),
            "version": self.version,
            "norm": self.norm.official,
            "components": list(COMPONENTS[self.version]),
            "iterations": self.iterations or STANDARD_ITERATIONS,
            "square_queries": self.square_queries or STANDARD_SQUARE_QUERIES,
            "target_classes": self.target_classes or STANDARD_TARGET_CLASSES,
            "standard": self.standard,
            "official_flags": sorted(self.flags),
        }

    def attack_group(self, model: nn.Module, x: Tensor, y: Tensor, eps: float, n_classes: int, seed: int) -> Tensor:
        if n_classes < 4:
            raise ValueError(
                f"AutoAttack needs at least 4 classes (its DLR loss reads the 3rd-largest logit and "
                f"APGD-T targets the others), the model has {n_classes}"
            )
        library = _pyautoattack()
        attack = library.AutoAttack(
            model, eps=eps, norm=self.norm.official, version=self.version, seed=seed, device=x.device
        )
        attack.verbose = False
        targets = min(STANDARD_TARGET_CLASSES, n_classes - 1)
        self.target_classes = targets
        attack.apgd_targeted.n_target_classes = targets
        attack.fab.n_target_classes = targets
        if self.iterations is not None:
            for component in (attack.apgd, attack.apgd_targeted):
                component.n_iter = self.iterations
            attack.fab.n_iter = self.iterations
        if self.square_queries is not None:
            attack.square.n_queries = self.square_queries
        with captured_flags(self.flags):
            x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=len(x))
        return x_adv


class Square(ScalarBudgetAttack):
    """The official Square Attack (L-inf or L2, margin loss, the authors' schedule): query-only, no gradients.

    Used by the gradient-masking check: a black-box attack that beats the
    white-box ones means the gradients lie.

    Args:
        n_queries: model queries per sample (AutoAttack's: 5,000).
        p_init: the initial fraction of pixels a square covers (AutoAttack's: 0.8).
        seed, n_classes: as for :class:`AutoAttack`.
    """

    name = "square"

    def __init__(
        self, *, n_queries: int = STANDARD_SQUARE_QUERIES, p_init: float = 0.8, seed: int | None = None,
        n_classes: int | None = None, norm: str = "linf",
    ) -> None:
        super().__init__(seed=seed, n_classes=n_classes, norm=norm)
        if n_queries < 1:
            raise ValueError(f"Square n_queries must be >= 1, got {n_queries}")
        if not 0.0 < p_init <= 1.0:
            raise ValueError(f"Square p_init must be in (0, 1], got {p_init}")
        _pyautoattack()
        self.n_queries = n_queries
        self.p_init = p_init

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "implementation": implementation(), "norm": self.norm.official, "n_queries": self.n_queries,
            "p_init": self.p_init, "loss": "margin",
        }

    def attack_group(self, model: nn.Module, x: Tensor, y: Tensor, eps: float, n_classes: int, seed: int) -> Tensor:
        from pyautoattack.square import SquareAttack

        attack = SquareAttack(
            model, p_init=self.p_init, n_queries=self.n_queries, eps=eps, norm=self.norm.official, n_restarts=1, seed=seed,
            verbose=False, device=x.device, resc_schedule=False,
        )
        return attack.perturb(x, y)


@ATTACKS.register(
    "autoattack",
    description="official AutoAttack, standard: APGD-CE, APGD-T, FAB-T, Square (pyautoattack)",
    paper="Croce & Hein 2020",
    training=False,
    norms=("linf", "l2"),
)
def autoattack_attack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> AutoAttack:
    """steps, alpha, random_start and loss do not apply; runs in float32 (no autocast)."""
    return AutoAttack(version="standard", norm=options.norm)


@ATTACKS.register(
    "autoattack-rand",
    description="official AutoAttack for randomised models: APGD-CE, APGD-DLR with 20-sample EOT (pyautoattack)",
    paper="Croce & Hein 2020",
    training=False,
    norms=("linf", "l2"),
)
def autoattack_rand_attack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> AutoAttack:
    """steps, alpha, random_start and loss do not apply; runs in float32 (no autocast)."""
    return AutoAttack(version="rand", norm=options.norm)


@ATTACKS.register(
    "autoattack-plus",
    description="official AutoAttack+: restarts and untargeted components added (pyautoattack)",
    paper="Croce & Hein 2020",
    training=False,
    norms=("linf", "l2"),
)
def autoattack_plus_attack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> AutoAttack:
    """steps, alpha, random_start and loss do not apply; runs in float32 (no autocast)."""
    return AutoAttack(version="plus", norm=options.norm)


@ATTACKS.register(
    "square",
    description="official Square: black-box, query-only attack (L-inf or L2), 5,000 queries (pyautoattack)",
    paper="Andriushchenko et al. 2020",
    training=False,
    norms=("linf", "l2"),
)
def square_attack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> Square:
    """steps, alpha, random_start and loss do not apply; runs in float32 (no autocast)."""
    return Square(norm=options.norm)
