"""The model's learning-rate schedules, registered in :data:`~ades_core.registries.LR_SCHEDULES`.

Each is a ``torch.optim.lr_scheduler`` schedule, so its state is the
scheduler's ``state_dict`` (in the training state) and the trainer steps it
after every epoch or, for ``per_iteration`` schedules, after every optimiser
step (:func:`per_iteration`).

* ``multistep``: ``lr`` times ``gamma`` at each milestone (fractions of the
  epochs; 75% and 90% by default), per epoch: Madry et al., the paper's setting.
* ``cosine``: ``lr * (1 + cos(pi * t / T)) / 2`` over the ``T`` optimiser steps
  of the run, per iteration (no restarts, down to 0).
* ``one-cycle``: :class:`torch.optim.lr_scheduler.OneCycleLR` with linear
  annealing: from ``lr / 1e4`` up to ``lr`` over the first ``warmup``
  fraction of the ``T`` steps, then down to ``lr / 1e4``, per iteration.
* ``cyclic``: one triangle of :class:`torch.optim.lr_scheduler.CyclicLR`: from
  0 up to ``lr`` over the first ``warmup`` fraction of the ``T`` steps and
  back to 0, per iteration: Wong et al.'s cyclic rate (their code's
  ``CyclicLR`` with ``base_lr`` 0, the peak at half the steps).
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, CyclicLR, LRScheduler, MultiStepLR, OneCycleLR

from ades_core.config import OptimConfig
from ades_core.registries import LR_SCHEDULES

ONE_CYCLE_DIVISOR = 1e4
"""``one-cycle`` starts and ends at ``lr / ONE_CYCLE_DIVISOR``."""


@LR_SCHEDULES.register("multistep", description="x gamma at fractions of the epochs, per epoch", per_iteration=False)
def multistep(optimizer: torch.optim.Optimizer, optim: OptimConfig, *, epochs: int, steps_per_epoch: int) -> LRScheduler:
    milestones = [round(m * epochs) for m in optim.milestones]
    return MultiStepLR(optimizer, milestones=milestones, gamma=optim.gamma)


@LR_SCHEDULES.register("cosine", description="cosine from lr to 0 over the run, per iteration", per_iteration=True)
def cosine(optimizer: torch.optim.Optimizer, optim: OptimConfig, *, epochs: int, steps_per_epoch: int) -> LRScheduler:
    return CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch), eta_min=0.0)


@LR_SCHEDULES.register(
    "one-cycle", description="linear up to lr over --lr-warmup, then down (Wong et al.'s cyclic), per iteration",
    per_iteration=True,
)
def one_cycle(optimizer: torch.optim.Optimizer, optim: OptimConfig, *, epochs: int, steps_per_epoch: int) -> LRScheduler:
    return OneCycleLR(
        optimizer,
        max_lr=optim.lr,
        total_steps=max(2, epochs * steps_per_epoch),
        pct_start=optim.warmup,
        anneal_strategy="linear",
        cycle_momentum=False,
        div_factor=ONE_CYCLE_DIVISOR,
        final_div_factor=1.0,
    )


@LR_SCHEDULES.register(
    "cyclic", description="one triangle from 0 up to lr (at --lr-warmup) and back to 0, per iteration (Wong et al.)",
    per_iteration=True,
)
def cyclic(optimizer: torch.optim.Optimizer, optim: OptimConfig, *, epochs: int, steps_per_epoch: int) -> LRScheduler:
    total = max(2, epochs * steps_per_epoch)
    up = max(1.0, optim.warmup * total)
    return CyclicLR(
        optimizer, base_lr=0.0, max_lr=optim.lr, step_size_up=up, step_size_down=max(1.0, total - up),
        cycle_momentum=False,
    )


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, *, epochs: int, steps_per_epoch: int
) -> LRScheduler:
    """The schedule ``optim.schedule`` for ``epochs`` passes of ``steps_per_epoch`` optimiser steps."""
    return LR_SCHEDULES.build(optim.schedule, optimizer, optim, epochs=epochs, steps_per_epoch=steps_per_epoch)


def per_iteration(optim: OptimConfig) -> bool:
    """Whether ``optim.schedule`` steps after every optimiser step (else after every epoch)."""
    return LR_SCHEDULES.entry(optim.schedule).info.per_iteration


__all__ = ["ONE_CYCLE_DIVISOR", "build_lr_schedule", "per_iteration"]
