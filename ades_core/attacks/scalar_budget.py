"""Run a library attack that takes one scalar budget behind the per-sample :class:`BudgetedAttack` protocol.

Published attack libraries (the official AutoAttack, torchattacks) take one
float ``eps`` for a whole batch, change the model's mode themselves, call
``.backward()`` and reseed torch's global generator. :class:`ScalarBudgetAttack`
fixes all of that once, for every adapter:

* **budgets**: a ``(B,)`` budget is split into groups of equal ``eps``; each
  group is attacked on its own (an evaluation has one budget, hence one
  group) and the result is projected into each sample's ball (of the
  attack's norm, L-inf or L2) and into [0, 1] again, so the protocol holds
  exactly whatever the library returns;
* **model mode**: the model runs in eval mode and every submodule's own flag
  is restored afterwards (:func:`~ades_core.model_mode.eval_mode`);
* **gradients**: parameters are frozen (``requires_grad=False``) during the
  call and their flags restored, so a library's ``.backward()`` leaves no
  parameter ``.grad``;
* **random state**: the library runs inside :func:`torch.random.fork_rng`, so
  its ``torch.manual_seed`` calls do not reset the caller's stream; with
  ``seed=None`` each call draws its seed from the caller's generator, so a
  seeded evaluation is deterministic.

Libraries synchronise host and device inside their loops (``.item()``, boolean
indexing): acceptable for evaluation, never used for training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ades_core.attacks.pgd import budget_column
from ades_core.errors import AdesError
from ades_core.model_mode import eval_mode
from ades_core.norms import NORMS


class MissingDependencyError(AdesError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""


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


class ScalarBudgetAttack:
    """Base of the adapters: per-sample budgets in groups, exact mode restore, frozen parameters.

    Subclasses implement :meth:`attack_group`, which attacks a batch at one
    scalar budget, and :meth:`settings`, what the attack ran with (written
    into ``eval.json``).

    Args:
        seed: seed of the library's random starts; ``None`` draws one from the
            caller's torch generator at each call.
        n_classes: number of classes; ``None`` reads it from the model's logits.
        norm: the ball the result is projected into again, ``linf`` or ``l2``.
    """

    name = "scalar-budget"

    def __init__(self, *, seed: int | None = None, n_classes: int | None = None, norm: str = "linf") -> None:
        if n_classes is not None and n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.seed = seed
        self.n_classes = n_classes
        self.norm = NORMS.get(norm)

    def attack_group(self, model: nn.Module, x: Tensor, y: Tensor, eps: float, n_classes: int, seed: int) -> Tensor:
        """``x`` float32 ``(G, C, H, W)`` in [0, 1] of one budget ``eps`` -> the library's ``x_adv``."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What the attack ran with, for reports: at least ``implementation`` and ``seed``."""
        return {"seed": self.seed}

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor | float) -> Tensor:
        """``x`` ``(B, C, H, W)`` in [0, 1], ``y`` ``(B,)``, ``eps`` ``(B,)`` or float -> ``x_adv``."""
        x = x.detach()
        radius = budget_column(eps, x)
        x32 = x.float()
        project = self.norm.projector(x32, radius)
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
                with torch.enable_grad():
                    adv = self.attack_group(model, x32[group], y[group], float(budget), n_classes, seed)
                x_adv[group] = adv.detach().to(device=x.device, dtype=torch.float32)
        x_adv = project(x_adv)
        return x_adv.to(x.dtype)
