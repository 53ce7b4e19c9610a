"""Schedulers: every budget lies in [eps_min, eps_min + lam], whatever the cues."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.protocols import Cues, Scheduler
from ades_core.registries import SCHEDULERS
from ades_core.schedulers import FixedBudget, MLPScheduler, StaticWeightedCues, centre_sigma
from tests.strategies import cue_batches

ranges = st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.5))


def _cues(values: torch.Tensor) -> Cues:
    return Cues(values, tuple(f"c{i}" for i in range(values.shape[1])))


def _inside(budget, eps_min, eps_max):
    low = torch.tensor(eps_min, dtype=torch.float32)
    high = torch.tensor(eps_max, dtype=torch.float32)
    return bool(((budget.eps >= low) & (budget.eps <= high)).all())


@settings(max_examples=80, deadline=None)
@given(cue_batches(), ranges, st.sampled_from(["free", "mean"]), st.integers(0, 2**16), st.floats(0.1, 100))
def test_mlp_budgets_stay_in_range_for_any_cues_and_weights(values, bounds, allocation, seed, scale):
    eps_min, lam = bounds
    torch.manual_seed(seed)
    scheduler = MLPScheduler(values.shape[1], hidden=8, eps_min=eps_min, lam=lam, allocation=allocation)
    with torch.no_grad():  # large weights push the sigmoid to saturation
        for p in scheduler.parameters():
            p.mul_(scale)
    budget = scheduler(_cues(values))
    assert budget.eps.shape == (values.shape[0],)
    assert _inside(budget, eps_min, eps_min + lam)
    assert ((budget.sigma >= 0) & (budget.sigma <= 1)).all()


@settings(max_examples=80, deadline=None)
@given(cue_batches(), ranges, st.data())
def test_static_budgets_stay_in_range_and_are_the_weighted_mean(values, bounds, data):
    eps_min, lam = bounds
    k = values.shape[1]
    weights = data.draw(st.lists(st.floats(0.0, 10.0), min_size=k, max_size=k).filter(lambda w: sum(w) > 0))
    budget = StaticWeightedCues(weights, eps_min=eps_min, lam=lam)(_cues(values))
    assert _inside(budget, eps_min, eps_min + lam)
    w = (torch.tensor(weights, dtype=torch.float64) / sum(weights)).float()
    torch.testing.assert_close(budget.sigma, (values @ w).clamp(0, 1))


def test_static_scheduler_weights_by_hand():
    cues = _cues(torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.5, 0.0]]))
    budget = StaticWeightedCues([3.0, 1.0], eps_min=2 / 255, lam=8 / 255)(cues)
    torch.testing.assert_close(budget.sigma, torch.tensor([0.25, 1.0, 0.375]))
    torch.testing.assert_close(budget.eps, (2 + 8 * torch.tensor([0.25, 1.0, 0.375])) / 255)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=64))
def test_centred_allocation_holds_the_batch_mean_exactly(raw):
    sigma = centre_sigma(torch.tensor(raw, dtype=torch.float64))
    assert float(sigma.mean()) == pytest.approx(0.5, abs=1e-12)
    assert ((sigma >= 0) & (sigma <= 1)).all()


def test_mlp_starts_at_sigma_one_half():
    torch.manual_seed(0)
    scheduler = MLPScheduler(3, hidden=16, eps_min=4 / 255, lam=8 / 255)
    budget = scheduler(_cues(torch.rand(32, 3)))
    assert (budget.sigma - 0.5).abs().max() < 0.02


def test_fixed_budget_ignores_cues():
    budget = FixedBudget(8 / 255)(Cues.empty(5, "cpu"))
    torch.testing.assert_close(budget.eps, torch.full((5,), 8 / 255))
    assert budget.sigma is None and budget.eps_min == budget.eps_max


def test_built_in_schedulers_satisfy_the_protocol():
    for name in SCHEDULERS:
        scheduler = SCHEDULERS.build(
            name, SchedulerOptions(), num_cues=3, budget=BudgetConfig(), allocation="free"
        )
        assert isinstance(scheduler, Scheduler)


def test_cue_count_mismatch_is_a_clear_error():
    scheduler = MLPScheduler(3, hidden=4, eps_min=0.0, lam=0.1)
    with pytest.raises(ValueError, match="built for 3 cues, got 2"):
        scheduler(_cues(torch.rand(4, 2)))
