"""What the builder chose on the config's behalf: the ``resolved`` part of ``config.json``.

Device, precision, the scheduler a defense chose, the data's classes, sizes
and channel statistics, the passes over the data: what a reader of the run
folder needs beside the config to know what ran. A resumed run must find the
same data again (:data:`~.config_file.DATA_FINGERPRINT`).
"""

from __future__ import annotations

from typing import Any

import torch

from ades_core.config import RunConfig
from ades_core.data import DatasetSplits, ImageTensors
from ades_core.distributed import DistributedContext
from ades_core.engine.lr_schedules import per_iteration
from ades_core.protocols import BudgetScheduled, Defense
from ades_core.schedulers.mlp import MLPScheduler


def resolved_record(
    config: RunConfig,
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    data: DatasetSplits,
    val_data: ImageTensors | None,
    defense: Defense,
    uses_cues: bool,
    learnable: bool,
    passes: int,
    dist: DistributedContext | None,
) -> dict[str, Any]:
    """The ``resolved`` record of a run built from ``config``.

    ``data``: the splits trained and tested on (the validation images held
    out of ``data.train`` already); ``learnable``: whether the defense's
    scheduler is trained (it has an optimiser); ``passes``: the passes over
    the data (fewer than ``config.optim.epochs`` for a replaying defense).
    """
    optim = config.optim
    scheduler = defense.scheduler if isinstance(defense, BudgetScheduled) else None
    resolved = {
        "device": str(device),
        "autocast_dtype": str(autocast_dtype).replace("torch.", "") if autocast_dtype else None,
        "cues": list(config.cues.names) if uses_cues else [],
        "scheduler": config.scheduler_name(),
        "scheduler_learnable": learnable,
        "allocation": scheduler.allocation if isinstance(scheduler, MLPScheduler) else None,
        "scheduler_lr": config.scheduler.learning_rate() if learnable else None,
        "norm": config.norm,
        "num_classes": data.num_classes,
        "classes": list(data.train.classes),
        "train_size": len(data.train),
        "val_size": 0 if val_data is None else len(val_data),
        "lr_schedule": optim.schedule,
        "lr_per_iteration": per_iteration(optim),
        "test_size": len(data.test),
        "mean": list(data.mean),
        "std": list(data.std),
        "epochs": passes,
    }
    if dist is not None:
        resolved |= {"world_size": dist.world_size, "backend": dist.backend, "sync_bn": config.sync_bn}
    return resolved


__all__ = ["resolved_record"]
