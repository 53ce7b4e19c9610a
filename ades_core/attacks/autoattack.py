"""AutoAttack and Square from torchattacks, behind the :class:`BudgetedAttack` protocol.

We do not write AutoAttack again: the ensemble (APGD-CE, APGD-T, FAB-T,
Square; Croce & Hein 2020) comes from ``torchattacks==3.5.1``, an optional
dependency (``pip install 'ades[autoattack]'``, or ``pip install --no-deps
torchattacks==3.5.1``, see docs/evaluation.md). The adapter fixes what the
library leaves loose:

* **budgets**: torchattacks takes one scalar ``eps``. A ``(B,)`` budget is
  split into groups of equal ``eps`` and each group is attacked on its own
  (an evaluation has one budget, so one group; a continuous per-sample budget
  costs one run per distinct value). The result is projected into each
  sample's ball and into [0, 1] again, so the protocol holds exactly.
* **model mode**: torchattacks calls ``model.eval()`` and afterwards
  ``model.train()`` on the whole model if it was training, which loses mixed
  modes; here every submodule's own flag is restored
  (:func:`~ades_core.model_mode.eval_mode`).
* **gradients**: FAB calls ``.backward()``, which would accumulate parameter
  ``.grad``; parameters are frozen (``requires_grad=False``) during the call
  and their flags restored, so the model is untouched.
* **random state**: its components call ``torch.manual_seed``; they run inside
  :func:`torch.random.fork_rng`, so the caller's random stream is not reset.
  With ``seed=None`` the seed is drawn from the caller's torch generator, so a
  seeded evaluation is deterministic.
* **iterations**: torchattacks' ``version='standard'`` runs APGD and FAB for
  10 iterations; the paper's standard version uses 100. ``iterations=100``
  (the default) restores the paper's setting.

torchattacks synchronises host and device inside its loops (``.item()``,
boolean indexing); that is acceptable for evaluation, not for training.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ades_core.attacks.pgd import budget_column
from ades_core.config import AttackOptions
from ades_core.model_mode import eval_mode
from ades_core.registries import ATTACKS

TORCHATTACKS_VERSION = "3.5.1"
"""The torchattacks release this adapter is written and tested against."""

INSTALL_HINT = (
    f"pip install 'ades[autoattack]' (or pip install --no-deps torchattacks=={TORCHATTACKS_VERSION}, "
    "which keeps your requests/urllib3; torchattacks never imports requests)"
)


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says how to install it."""


def torchattacks_available() -> bool:
    return importlib.util.find_spec("torchattacks") is not None


def _torchattacks() -> Any:
    try:
        return importlib.import_module("torchattacks")
    except ImportError as exc:
        raise MissingDependencyError(f"this attack needs torchattacks: {INSTALL_HINT} ({exc})") from None


def torchattacks_version() -> str | None:
    """The installed torchattacks version, or ``None``."""
    try:
        return importlib.metadata.version("torchattacks")
    except importlib.metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on every parameter inside; each flag restored after."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _rng_devices(x: Tensor) -> list[torch.device]:
    return [x.device] if x.device.type == "cuda" else []


class TorchattacksAttack:
    """Base of the adapters: per-sample budgets, exact mode restore, frozen parameters.

    Subclasses implement :meth:`make`, returning a torchattacks attack for one
    scalar budget. ``seed=None`` draws each call's seed from the caller's
    torch generator; ``n_classes=None`` reads it from the model's logits.
    """

    name = "torchattacks"

    def __init__(self, *, seed: int | None = None, n_classes: int | None = None) -> None:
        if not torchattacks_available():
            raise MissingDependencyError(f"the {self.name!r} attack needs torchattacks: {INSTALL_HINT}")
        if n_classes is not None and n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.seed = seed
        self.n_classes = n_classes

    def make(self, model: nn.Module, eps: float, n_classes: int, seed: int) -> Any:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What the attack ran with, for reports."""
        return {"implementation": f"torchattacks=={torchattacks_version()}", "seed": self.seed}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor | float) -> Tensor:
        """``x`` ``(B, C, H, W)`` in [0, 1], ``y`` ``(B,)``, ``eps`` ``(B,)`` or float -> ``x_adv``."""
        x = x.detach()
        radius = budget_column(eps, x)
        x32 = x.float()
        low = (x32 - radius).clamp_(min=0.0)
        high = (x32 + radius).clamp_(max=1.0)
        flat = radius.flatten()
        # One host read of the distinct budgets, before any attack loop.
        budgets = [b for b in torch.unique(flat).tolist() if b > 0.0]
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        x_adv = x32.clone()
        with eval_mode(model), frozen_parameters(model), torch.random.fork_rng(devices=_rng_devices(x)):
            n_classes = self.n_classes
            if n_classes is None:
                with torch.no_grad():
                    n_classes = int(model(x32[:1]).shape[1])
            for budget in budgets:
                group = (flat == budget).nonzero().squeeze(1)
                attack = self.make(model, float(budget), n_classes, seed)
                attack.set_device(x.device)
                with torch.enable_grad():
                    adv = attack(x32[group], y[group])
                x_adv[group] = adv.detach().to(device=x.device, dtype=torch.float32)
        x_adv = torch.minimum(torch.maximum(x_adv, low), high)
        return x_adv.to(x.dtype)


class AutoAttack(TorchattacksAttack):
    """Standard AutoAttack (L-inf): APGD-CE, APGD-T, FAB-T, Square, from torchattacks.

    Args:
        version: torchattacks' version name: ``standard`` (the paper's), ``plus`` or ``rand``.
        iterations: iterations of APGD-CE, APGD-T and FAB-T (the paper's
            standard: 100); ``None`` keeps torchattacks' own default (10).
        square_queries: queries of its Square component (the paper's: 5000);
            fewer only for cheap tests.
        seed: seed of the components' random starts; ``None`` draws it from
            the caller's torch generator at each call.
        n_classes: number of classes (targets of APGD-T and FAB-T: ``n_classes - 1``);
            ``None`` reads it from the model's output.
    """

    name = "autoattack"

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
            "version": self.version,
            "norm": "Linf",
            "components": ["apgd-ce", "apgd-t", "fab-t", "square"] if self.version == "standard" else self.version,
            "iterations": self.iterations if self.iterations is not None else "torchattacks default (10)",
            "square_queries": self.square_queries,
        }

    def make(self, model: nn.Module, eps: float, n_classes: int, seed: int) -> Any:
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
        return attack


class Square(TorchattacksAttack):
    """Square Attack (L-inf, margin loss): a query-only, gradient-free attack.

    Used by the gradient-masking check: a black-box attack that beats the
    white-box ones means the gradients lie.

    Args:
        n_queries: model queries per sample (AutoAttack uses 5000).
        seed, n_classes: as for :class:`AutoAttack`.
    """

    name = "square"

    def __init__(self, *, n_queries: int = 5000, seed: int | None = None, n_classes: int | None = None) -> None:
        super().__init__(seed=seed, n_classes=n_classes)
        if n_queries < 1:
            raise ValueError(f"Square n_queries must be >= 1, got {n_queries}")
        self.n_queries = n_queries

    def settings(self) -> dict[str, Any]:
        return super().settings() | {"norm": "Linf", "n_queries": self.n_queries, "loss": "margin"}

    def make(self, model: nn.Module, eps: float, n_classes: int, seed: int) -> Any:
        ta = _torchattacks()
        return ta.Square(model, norm="Linf", eps=eps, n_queries=self.n_queries, n_restarts=1, seed=seed, loss="margin")


@ATTACKS.register(
    "autoattack",
    description="AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (torchattacks, 100 iterations)",
    paper="Croce & Hein 2020",
    training=False,
)
def autoattack_attack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> AutoAttack:
    """steps, alpha, random_start and loss do not apply; runs in float32 (no autocast)."""
    return AutoAttack()


@ATTACKS.register(
    "square",
    description="Square: black-box, query-only L-inf attack (torchattacks)",
    paper="Andriushchenko et al. 2020",
    training=False,
)
def square_attack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> Square:
    """steps, alpha, random_start and loss do not apply; runs in float32 (no autocast)."""
    return Square()
