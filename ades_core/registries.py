"""The registries of ades, one per component family, with their calling contracts.

Built-in components register themselves in their own modules; third-party
packages through the entry-point group named beside each registry. Each
registry's entries carry its family's typed metadata record
(:mod:`ades_core.registry_info`), named beside it.
"""

from __future__ import annotations

from typing import Any

from ades_core.registry import Registry
from ades_core.registry_info import (
    AttackInfo,
    DatasetInfo,
    DefenseInfo,
    LrScheduleInfo,
    NoInfo,
    ObjectiveInfo,
    SchedulerInfo,
)

CUES: Registry[Any, NoInfo] = Registry("cue", "ades.cues")
"""name -> ``factory(options: CueOptions) -> CueExtractor``."""

SCHEDULERS: Registry[Any, SchedulerInfo] = Registry("scheduler", "ades.schedulers", info=SchedulerInfo)
"""name -> ``factory(options: SchedulerOptions, *, num_cues: int, budget: BudgetConfig,
allocation: str) -> Scheduler`` (``allocation``: ``free`` or ``mean``, from the objective);
info :class:`SchedulerInfo` (``learnable``)."""

SCHEDULER_OBJECTIVES: Registry[Any, ObjectiveInfo] = Registry(
    "scheduler objective", "ades.scheduler_objectives", info=ObjectiveInfo
)
"""name -> ``factory(options: SchedulerOptions, *, budget: BudgetConfig) -> SchedulerObjective`` (how a learnable scheduler is trained);
info :class:`ObjectiveInfo` (``lr``)."""

ATTACKS: Registry[Any, AttackInfo] = Registry("attack", "ades.attacks", info=AttackInfo)
"""name -> ``factory(options: AttackOptions, *, autocast_dtype: torch.dtype | None) -> BudgetedAttack``;
info :class:`AttackInfo` (``norms``, ``training``)."""

ATTACK_LOSSES: Registry[Any, NoInfo] = Registry("attack loss")
"""name -> ``loss(logits (B, K), y (B,)) -> (B,)`` per-sample loss to maximise."""

DEFENSES: Registry[Any, DefenseInfo] = Registry("defense", "ades.defenses", info=DefenseInfo)
"""name -> ``factory(parts: DefenseParts) -> Defense``; info :class:`DefenseInfo` (its
scheduler, whether it uses cues, which options and norms it accepts, its own config rule)."""

DATASETS: Registry[Any, DatasetInfo] = Registry("dataset", info=DatasetInfo)
"""name -> ``factory(request: DataRequest) -> DatasetSplits``; info :class:`DatasetInfo` ``test_split``:
``loader(request: DataRequest) -> ImageTensors``, the test split alone (reading no training
data), used by evaluation; without it the factory loads everything."""

LR_SCHEDULES: Registry[Any, LrScheduleInfo] = Registry("learning-rate schedule", info=LrScheduleInfo)
"""name -> ``factory(optimizer, optim: OptimConfig, *, epochs: int, steps_per_epoch: int) ->
torch.optim.lr_scheduler.LRScheduler``; info :class:`LrScheduleInfo` ``per_iteration``: stepped after every optimiser
step (True) or after every epoch (False). ``epochs`` are passes over the data; ``steps_per_epoch``
counts optimiser steps per pass (batches times a replaying defense's replays)."""
