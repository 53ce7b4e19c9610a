"""A fully wired training setup, as the builder returns it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from ades_core.config import RunConfig
from ades_core.data import DeviceLoader, ImageTensors
from ades_core.distributed import DistributedContext
from ades_core.engine.runfolder.model_files import ModelSpec
from ades_core.protocols import BudgetedAttack, Defense


@attrs.define(kw_only=True)
class TrainingSetup:
    """Every part of one run, wired and on its device; ``fit(out)`` trains it.

    Attributes:
        config: the validated run config.
        resolved: names the builder chose on the config's behalf (device,
            scheduler, objective, autocast dtype, data sizes), for ``config.json``.
        model: the classifier, ``(B, C, H, W)`` in [0, 1] -> logits.
        defense: the training method; its own parameters (a learnable
            scheduler) are optimised by ``defense_optimizer``.
        eval_attack: the per-epoch held-out attack (PGD-20 at ``config.eval.eps``).
        val_data: the validation images held out of the training split
            (``config.val.split``), or ``None``.
        lr_per_iteration: ``lr_schedule`` steps after every optimiser step (else after every epoch).
        dist: this rank's place under ``torchrun``, or ``None`` for one process.
        train_model: what the training forward runs: ``model`` in
            ``DistributedDataParallel`` under ``torchrun``, else ``model`` itself
            (``None`` at construction means ``model``).
        epochs: passes over the training data: ``config.optim.epochs``, divided
            by the defense's ``replays`` for a replaying defense (Free-AT); the
            LR schedule's milestones are fractions of it (``None`` at
            construction means ``config.optim.epochs``).
    """

    config: RunConfig
    resolved: dict[str, Any]
    device: torch.device
    autocast_dtype: torch.dtype | None
    model: nn.Module
    model_spec: ModelSpec
    defense: Defense
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LRScheduler
    defense_optimizer: torch.optim.Optimizer | None
    grad_scaler: torch.amp.GradScaler | None
    train_loader: DeviceLoader
    test_data: ImageTensors
    eval_attack: BudgetedAttack
    val_data: ImageTensors | None = None
    lr_per_iteration: bool = False
    dist: DistributedContext | None = None
    train_model: nn.Module | None = None
    epochs: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.train_model is None:
            self.train_model = self.model
        if self.epochs is None:
            self.epochs = self.config.optim.epochs

    def fit(self, out: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
        """Train for ``epochs`` passes over the data, writing the run folder ``out``.

        ``kwargs`` go to :class:`~ades_core.engine.trainer.Trainer`: ``progress``,
        ``overwrite``, and ``resume=True`` to continue the run already in ``out``
        (build this setup from :func:`~ades_core.engine.runfolder.resume_config`).
        """
        from ades_core.engine.trainer import Trainer

        return Trainer(self, **kwargs).fit(Path(out))
