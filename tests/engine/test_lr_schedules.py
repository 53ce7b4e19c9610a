"""Learning-rate schedules through torch.optim.lr_scheduler, stepped per epoch or per iteration."""

from __future__ import annotations

import math

import pytest
import torch

from ades_core.config import ConfigError, OptimConfig
from ades_core.engine.lr_schedules import build_lr_schedule, per_iteration


def _rates(optim: OptimConfig, epochs: int, steps: int) -> list[float]:
    """The rate of each optimiser step, stepping the schedule as the trainer does."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=optim.lr)
    schedule = build_lr_schedule(opt, optim, epochs=epochs, steps_per_epoch=steps)
    rates = []
    for _ in range(epochs):
        for _ in range(steps):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            if per_iteration(optim):
                schedule.step()
        if not per_iteration(optim):
            schedule.step()
    return rates


def test_multistep_decays_at_its_milestones_once_per_epoch():
    rates = _rates(OptimConfig(epochs=10, lr=0.1), 10, 2)
    assert not per_iteration(OptimConfig())
    assert rates[::2] == pytest.approx([0.1] * 8 + [0.01] + [0.001])  # from epochs 9 and 10 (1-based): round(7.5), 9


def test_cosine_falls_from_lr_to_zero_per_iteration():
    rates = _rates(OptimConfig(lr=0.2, schedule="cosine"), 4, 5)
    assert rates[0] == pytest.approx(0.2)
    assert rates[10] == pytest.approx(0.1)  # half-way: (1 + cos(pi/2)) / 2
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(0.2 * (1 + math.cos(math.pi * 19 / 20)) / 2)


def test_cyclic_is_wong_et_als_triangle_from_zero_to_lr_and_back():
    rates = _rates(OptimConfig(lr=0.2, schedule="cyclic", warmup=0.5), 4, 5)
    assert rates[0] == 0.0 and rates[10] == pytest.approx(0.2)
    assert rates[5] == pytest.approx(0.1) and rates[15] == pytest.approx(0.1)


def test_one_cycle_peaks_at_lr_after_its_warmup():
    rates = _rates(OptimConfig(lr=0.2, schedule="one-cycle", warmup=0.25), 4, 5)
    assert max(rates) == pytest.approx(0.2) and rates.index(max(rates)) in (4, 5)
    assert rates[0] == pytest.approx(0.2 / 1e4)


def test_an_unknown_schedule_names_the_registered_ones():
    with pytest.raises(ConfigError, match=r"schedule: unknown learning-rate schedule 'step'; registered: .*cosine"):
        OptimConfig(schedule="step")
