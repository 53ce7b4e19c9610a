"""Regression: a step the non-finite guard skips leaves Free-AT's carried ``delta`` as it was.

Free-AT replaced its ``delta`` buffer inside the step (on the first batch, and
to grow it for a larger batch) and moved it before the guard decided. The
guard, which restores the tensors it copied before the step, restored the
old buffer instead, and the skipped step's move stayed. Now the step only
stages the new ``delta``, and ``StepOutput.commit(kept)``, which the trainer
calls after the guard with the step's flag, puts it in place for a kept step
only.

The bad step here has a finite loss and a finite input gradient (so ``delta``
would move) and a NaN gradient on one model weight (so the guard skips it).
"""

from __future__ import annotations

import attrs
import pytest
import torch
from torch import nn

from ades_core import RunConfig, build
from ades_core.engine.trainer import Trainer
from tests.faults import NaNGradient

EPS = 8 / 255


class NaNWeightGradientAt(nn.Module):
    """Wraps a defense; its ``bad``-th calls (1-based) add ``0 * w.sum()`` with a NaN gradient on
    the model's first weight: the loss stays finite, the input gradient too, the step is not."""

    def __init__(self, inner: nn.Module, bad: set[int]) -> None:
        super().__init__()
        self.inner, self.name, self.bad, self.calls = inner, inner.name, bad, 0

    def step(self, model, x, y, idx):
        self.calls += 1
        out = self.inner.step(model, x, y, idx)
        if self.calls in self.bad:
            weight = next(model.parameters())
            out = attrs.evolve(out, loss=out.loss + 0.0 * NaNGradient.apply(weight.sum()))
        return out


@pytest.fixture
def trainer(cifar10_dir) -> Trainer:
    """A Free-AT setup on 16 CIFAR-10 images (one batch of 16), ``on_nonfinite="skip"``."""
    config = RunConfig.from_dict({
        "defense": "free-at", "device": "cpu", "on_nonfinite": "skip", "budget": {"eps": EPS},
        "model": {"backbone": "ades_cnn_small"},
        "data": {"dataset": "imagefolder", "data_dir": str(cifar10_dir), "train_subset": 16,
                 "test_subset": 4, "batch_size": 16},
        "defense_options": {"replays": 2}, "eval": {"steps": 1},
    })  # fmt: skip
    return Trainer(build(config), progress=False)


def _batch(trainer: Trainer):
    loader = trainer.setup.train_loader
    loader.set_epoch(0)
    return next(iter(loader))


def _update(trainer: Trainer, x, y, idx, *, bad: bool) -> bool:
    """One trainer update; ``bad``: with a NaN weight gradient. Returns whether it was kept."""
    trainer.setup.defense = NaNWeightGradientAt(trainer.setup.defense, {1} if bad else set())
    try:
        _, finite = trainer._update(trainer.setup.train_model, x, y, idx, [])
    finally:
        trainer.setup.defense = trainer.setup.defense.inner
    return bool(finite)


def _delta(trainer: Trainer) -> torch.Tensor:
    return trainer.setup.defense.delta.clone()


def test_a_skipped_first_step_leaves_delta_at_zero(trainer):
    x, y, idx = _batch(trainer)
    weights = [p.detach().clone() for p in trainer.setup.model.parameters()]
    assert not _update(trainer, x, y, idx, bad=True)
    assert not trainer.setup.defense.delta_for(x).any(), "the skipped step moved delta"
    assert all(torch.equal(p, w) for p, w in zip(trainer.setup.model.parameters(), weights))
    assert _update(trainer, x, y, idx, bad=False)  # the same step kept: delta moves by eps
    assert trainer.setup.defense.delta_for(x).abs().amax() == pytest.approx(EPS)


def test_a_skipped_step_leaves_delta_unchanged(trainer):
    x, y, idx = _batch(trainer)
    assert _update(trainer, x, y, idx, bad=False)
    kept = _delta(trainer)
    assert kept.abs().amax() > 0
    assert not _update(trainer, x, y, idx, bad=True)
    assert torch.equal(_delta(trainer), kept)


def test_a_skipped_step_on_a_larger_batch_leaves_the_carried_rows_unchanged(trainer):
    x, y, idx = _batch(trainer)
    assert _update(trainer, x[:8], y[:8], idx[:8], bad=False)
    kept = _delta(trainer)
    assert kept.shape[0] == 8 and kept.abs().amax() > 0
    assert not _update(trainer, x, y, idx, bad=True)  # 16 rows: the buffer must grow for this step
    carried = trainer.setup.defense.delta_for(x)
    assert torch.equal(carried[:8], kept) and not carried[8:].any()


def test_a_kept_step_still_moves_delta_by_the_sign_of_its_input_gradient(trainer):
    x, y, idx = _batch(trainer)
    assert _update(trainer, x, y, idx, bad=False)
    before = _delta(trainer)
    assert _update(trainer, x, y, idx, bad=False)
    after = _delta(trainer)
    assert not torch.equal(after, before)
    assert after.abs().amax() <= EPS + 1e-7
