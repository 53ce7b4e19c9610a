"""Resuming keeps every piece of state issue 16 added: the weight average, the best so far,
the per-iteration LR schedule, the early stop. The resumed run is bitwise the uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from ades_core import RunConfig, build
from ades_core.engine.runfolder import resume_config
from ades_core.engine.trainer import Trainer
from ades_core.engine.runfolder.state_files import load_training_state
from ades_core.engine.validation import RunSelection

pytestmark = pytest.mark.slow


def _config(data_dir: Path, **changes) -> RunConfig:
    raw = {
        "defense": "pgd-at", "device": "cpu", "seed": 2, "model": {"backbone": "ades_cnn_small"},
        "data": {"dataset": "imagefolder", "data_dir": str(data_dir), "train_subset": 96, "test_subset": 16,
                 "batch_size": 32},
        "attack": {"steps": 1, "bn": "train"}, "eval": {"steps": 1},
        "optim": {"epochs": 2, "schedule": "cosine"}, "val": {"split": 32, "early_stop_drop": 1.0},
        "ema": {"decay": 0.9}, "checkpoint_every": 1,
    }
    return RunConfig.from_dict(raw).evolve(**changes)


class Interrupt(Exception):
    pass


def _interrupted(config: RunConfig, out: Path, after_updates: int) -> None:
    """Train ``config`` into ``out`` and stop it (an exception) after ``after_updates`` optimiser steps."""
    trainer = Trainer(build(config), progress=False)
    update, calls = trainer.selection.after_update, []

    def counting() -> None:
        calls.append(1)
        if len(calls) > after_updates:
            raise Interrupt
        update()

    trainer.selection.after_update = counting
    with pytest.raises(Interrupt):
        trainer.fit(out)


def _resume(out: Path) -> list[dict]:
    return Trainer(build(resume_config(out, {})), progress=False, resume=True).fit(out)


@pytest.mark.parametrize("after_updates", [2, 3], ids=["epoch-boundary", "mid-epoch"])
def test_a_resumed_run_keeps_the_average_the_best_and_the_schedule(cifar10_dir, tmp_path, after_updates):
    config = _config(cifar10_dir)
    reference = tmp_path / "reference"
    build(config).fit(reference, progress=False)
    out = tmp_path / "resumed"
    _interrupted(config, out, after_updates)  # 2 steps per epoch: stopped after epoch 1, or in epoch 2
    state = load_training_state(out)
    assert state["selection"]["ema"]["updates"] == after_updates
    assert state["position"]["step"] == (after_updates == 3)
    _resume(out)
    for name in ("model.safetensors", "model-ema.safetensors", "model-best.safetensors"):
        got, want = load_file(str(out / name)), load_file(str(reference / name))
        assert all(torch.equal(got[k], want[k]) for k in want), name
    read = lambda folder: [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    drop = {"train_seconds", "eval_seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in read(out)] == [
        {k: v for k, v in r.items() if k not in drop} for r in read(reference)
    ]


def test_a_run_stopped_early_stays_stopped_on_resume(cifar10_dir, tmp_path):
    out = tmp_path / "run"
    config = _config(cifar10_dir, optim={"epochs": 3})
    setup = build(config)
    trainer = Trainer(setup, progress=False)
    # force the stop after epoch 1: a best of 100% that the next check cannot come near
    original = RunSelection._observe

    def observe(self, epoch, robust_acc):
        original(self, epoch, robust_acc)
        if epoch == 1:
            self.best_acc = 1.0 + 1.0  # more than early_stop_drop (1.0) above any accuracy
        elif self.stopped_epoch is None and self.best_acc - robust_acc > self.early_stop_drop:
            self.stopped_epoch = epoch

    trainer.selection._observe = observe.__get__(trainer.selection)
    history = trainer.fit(out)
    assert len(history) == 2 and history[-1]["early_stop"]
    assert load_training_state(out)["selection"]["stopped_epoch"] == 2
    console = Console(file=None, record=True, quiet=False, width=200)
    resumed = Trainer(build(resume_config(out, {})), console=console, progress=False, resume=True)
    assert len(resumed.fit(out)) == 2  # nothing more trained
    lines = console.export_text()
    assert "stopped early after epoch 2" in lines and "nothing to do" in lines
