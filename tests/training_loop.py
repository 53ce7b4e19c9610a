"""The steps of an epoch as the trainer makes them, with the steps after a warm-up run inside a probe."""

from __future__ import annotations

import itertools
from contextlib import AbstractContextManager

from ades_core.engine.setup import TrainingSetup
from ades_core.engine.stats import EpochStats
from ades_core.engine.trainer import Trainer
from ades_core.protocols import EpochAware


def train_steps(setup: TrainingSetup, probe: AbstractContextManager, steps: int | None = None) -> EpochStats:
    """One warm-up step outside ``probe`` (lazy optimiser state, cuDNN, the loader's per-epoch order),
    then ``steps`` more (default: the rest of the epoch) inside it: next batch, the trainer's update,
    the epoch's statistics and telemetry. Returns the statistics, unread."""
    trainer = Trainer(setup, progress=False)
    setup.train_loader.set_epoch(0)
    if isinstance(setup.defense, EpochAware):
        setup.defense.start_epoch(0, setup.epochs)
    stats = EpochStats(setup.device)
    batches = iter(setup.train_loader)
    setup.train_model.train()
    x, y, idx = next(batches)
    trainer._update(setup.train_model, x, y, idx, [])
    with probe:
        for step, (x, y, idx) in enumerate(itertools.islice(batches, steps), start=2):
            out, finite = trainer._update(setup.train_model, x, y, idx, [])
            stats.update(out, y, finite, step)
            trainer.telemetry.update(out, idx, finite)
    return stats
