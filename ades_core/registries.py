"""The registries of ades, one per component family, with their calling contracts.

Built-in components register themselves in their own modules; third-party
packages through the entry-point group named beside each registry.
"""

from __future__ import annotations

from ades_core.registry import Registry

CUES: Registry = Registry("cue", "ades.cues")
"""name -> ``factory(options: CueOptions) -> CueExtractor``."""

SCHEDULERS: Registry = Registry("scheduler", "ades.schedulers")
"""name -> ``factory(options: SchedulerOptions, *, num_cues: int, budget: BudgetConfig,
allocation: str) -> Scheduler`` (``allocation``: ``free`` or ``mean``, from the objective)."""

SCHEDULER_OBJECTIVES: Registry = Registry("scheduler objective", "ades.scheduler_objectives")
"""name -> ``factory(options: SchedulerOptions, *, budget: BudgetConfig) -> SchedulerObjective`` (how a learnable scheduler is trained)."""

ATTACKS: Registry = Registry("attack", "ades.attacks")
"""name -> ``factory(options: AttackOptions, *, autocast_dtype: torch.dtype | None) -> BudgetedAttack``."""

ATTACK_LOSSES: Registry = Registry("attack loss")
"""name -> ``loss(logits (B, K), y (B,)) -> (B,)`` per-sample loss to maximise."""

DEFENSES: Registry = Registry("defense", "ades.defenses")
"""name -> ``factory(parts: DefenseParts) -> Defense``; meta ``scheduler`` names
the scheduler it uses unless the config chooses one."""

DATASETS: Registry = Registry("dataset")
"""name -> ``factory(request: DataRequest) -> DatasetSplits``; optional meta ``test_split``:
``loader(request: DataRequest) -> ImageTensors``, the test split alone (reading no training
data), used by evaluation; without it the factory loads everything."""

LR_SCHEDULES: Registry = Registry("learning-rate schedule")
"""name -> ``factory(optimizer, optim: OptimConfig, *, epochs: int, steps_per_epoch: int) ->
torch.optim.lr_scheduler.LRScheduler``; meta ``per_iteration``: stepped after every optimiser
step (True) or after every epoch (False). ``epochs`` are passes over the data; ``steps_per_epoch``
counts optimiser steps per pass (batches times a replaying defense's replays)."""
