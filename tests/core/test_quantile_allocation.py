"""The ``target-quantile`` objective (the default) and the shuffled control.

``target-quantile`` fits the MLP's output to each sample's measured breaking
radius, as ``target`` does, but hands out budgets from the running quantile
function of the measured radii, by the rank of that output in the batch. The
spread is then the measured spread of the radii, whatever the fit's R^2; what
is learned is the order. These tests check that every budget stays in
``[eps_min, eps_min + lam]`` with the batch mean held exactly, that the
quantile table is the measured one, that the budgets follow the fitted order,
and that the shuffled control hands out the same budgets in a random order.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ades_core import RunConfig, build_defense
from ades_core.config import ConfigError, SchedulerOptions
from ades_core.defenses.budgeted import shuffle_allocation
from ades_core.protocols import Budget, Cues, TargetFitting
from ades_core.registries import SCHEDULER_OBJECTIVES
from ades_core.schedulers import MLPScheduler, RobustnessTargetFit
from ades_core.schedulers.mlp import QUANTILE_MOMENTUM, QUANTILE_POINTS, batch_ranks, interpolate_quantiles
from tests.strategies import cue_batches
from tests.tiny_models import LinearClassifier

EPS_MIN, LAM = 4 / 255, 8 / 255


def _cues(values: torch.Tensor) -> Cues:
    return Cues(values, tuple(f"c{i}" for i in range(values.shape[1])))


def _scheduler(num_cues: int, **kwargs) -> MLPScheduler:
    return MLPScheduler(num_cues, hidden=8, eps_min=EPS_MIN, lam=LAM, allocation="quantile", **kwargs)


def test_target_quantile_is_the_default_objective_and_allocates_by_quantile():
    assert SchedulerOptions().objective == "target-quantile"
    objective = SCHEDULER_OBJECTIVES.build("target-quantile", SchedulerOptions(), budget=RunConfig().budget)
    assert objective.allocation == "quantile" and isinstance(objective, TargetFitting)


def test_ranks_and_interpolation_by_hand():
    torch.testing.assert_close(batch_ranks(torch.tensor([0.3, 0.1, 0.9, 0.2])), torch.tensor([5, 1, 7, 3]) / 8)
    table = torch.tensor([0.0, 0.0, 1.0])  # quantile function at 0, 1/2, 1
    torch.testing.assert_close(interpolate_quantiles(table, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])),
                               torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0]))


def test_before_any_target_is_measured_budgets_are_spread_uniformly_in_the_outputs_order():
    budget = _scheduler(2)(_cues(torch.rand(16, 2)))
    positions = (torch.arange(16) + 0.5) / 16  # sigma = 1/2 + (u - 1/2) / 2 for the uniform prior
    expected = EPS_MIN + LAM * (0.5 + (positions - positions.mean()) / 2)
    order = budget.score.detach().argsort()
    torch.testing.assert_close(budget.eps[order], expected)
    assert budget.score is not None and budget.score.requires_grad and not budget.eps.requires_grad


def test_the_quantile_table_is_the_first_batchs_quantiles_then_a_running_average():
    scheduler = _scheduler(1)
    first = torch.rand(40)
    fitted = torch.arange(40) % 8 != 0
    scheduler.record_targets(first, fitted)
    levels = torch.linspace(0, 1, QUANTILE_POINTS)
    torch.testing.assert_close(scheduler.target_quantiles, torch.quantile(first[fitted], levels))
    second = torch.rand(40)
    scheduler.record_targets(second, torch.ones(40, dtype=torch.bool))
    expected = (1 - QUANTILE_MOMENTUM) * torch.quantile(first[fitted], levels) + QUANTILE_MOMENTUM * torch.quantile(
        second, levels
    )
    torch.testing.assert_close(scheduler.target_quantiles, expected)
    before = scheduler.target_quantiles.clone()
    scheduler.record_targets(torch.rand(40), torch.zeros(40, dtype=torch.bool))  # nothing fitted: unchanged
    assert torch.equal(scheduler.target_quantiles, before) and int(scheduler.targets_seen) == 2


def test_the_table_is_saved_with_the_schedulers_state():
    scheduler = _scheduler(1)
    scheduler.record_targets(torch.rand(20), torch.ones(20, dtype=torch.bool))
    restored = _scheduler(1)
    restored.load_state_dict(scheduler.state_dict())
    assert torch.equal(restored.target_quantiles, scheduler.target_quantiles)


@settings(max_examples=60, deadline=None)
@given(cue_batches(max_batch=32), st.integers(0, 2**16), st.floats(0.01, 1.0))
def test_budgets_stay_in_range_with_the_mean_held_while_fitting(values, seed, lr):
    torch.manual_seed(seed)
    scheduler = _scheduler(values.shape[1], init_std=0.5)
    objective = RobustnessTargetFit(EPS_MIN, LAM, allocation="quantile")
    optimiser = torch.optim.Adam(scheduler.parameters(), lr=lr)
    batch = values.shape[0]
    for _ in range(4):
        budget = scheduler(_cues(values))
        eps = budget.eps.detach().double()
        assert bool(((budget.eps >= EPS_MIN) & (budget.eps <= EPS_MIN + LAM)).all())
        assert float(eps.mean()) == pytest.approx(EPS_MIN + LAM / 2, abs=1e-6)
        radius = torch.where(torch.rand(batch) < 0.3, torch.inf, torch.rand(batch) * (EPS_MIN + LAM))
        target = objective.target_sigma(objective.target_radius(radius))
        held = objective.held_out(torch.arange(batch))
        optimiser.zero_grad()
        objective.fit_loss(budget.prediction, target, held).backward()
        optimiser.step()
        scheduler.record_targets(target, ~held)


def test_budgets_follow_the_fitted_order_with_the_measured_spread():
    # One cue reveals the breaking radius (a third of the samples robust, the rest broken at
    # the start): the fitted order puts the robust third on top, and the spread is the
    # measured one (sigma = 1/2 + (q - mean q) / 2), not the regression's shrunken one.
    torch.manual_seed(0)
    scheduler = _scheduler(1, init_std=0.5)
    objective = RobustnessTargetFit(EPS_MIN, LAM, allocation="quantile")
    optimiser = torch.optim.Adam(scheduler.parameters(), lr=3e-2)
    for _ in range(150):
        cue = torch.rand(48, 1)
        robust = cue[:, 0] > 2 / 3
        target = robust.float()
        budget = scheduler(_cues(cue))
        optimiser.zero_grad()
        objective.fit_loss(budget.prediction, target, torch.zeros(48, dtype=torch.bool)).backward()
        optimiser.step()
        scheduler.record_targets(target, torch.ones(48, dtype=torch.bool))
    cue = torch.linspace(0, 1, 48).view(-1, 1)
    eps = scheduler(_cues(cue)).eps.detach()
    robust = cue[:, 0] > 2 / 3
    assert float(eps[robust].min()) > float(eps[~robust].max())
    assert float(eps.std(correction=0)) > LAM * 0.2  # two levels a third apart: std lam/2 * sqrt(2)/3
    assert float(eps.mean()) == pytest.approx(EPS_MIN + LAM / 2, abs=1e-6)


def test_record_targets_needs_the_quantile_allocation():
    scheduler = MLPScheduler(1, hidden=4, eps_min=EPS_MIN, lam=LAM, allocation="mean")
    with pytest.raises(RuntimeError, match="quantile allocation"):
        scheduler.record_targets(torch.rand(4), torch.ones(4, dtype=torch.bool))


def _config(**scheduler) -> RunConfig:
    return RunConfig.from_dict(
        {
            "defense": "ades",
            "cues": {"names": "grad,entropy"},
            "attack": {"steps": 3, "alpha": "2/255"},
            "budget": {"eps_min": "4/255", "lam": "8/255"},
            "scheduler": {"objective": "target-quantile", "init_std": 0.5, **scheduler},
        }
    )


def _batch(batch: int = 24, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 2, 3, generator=generator)
    y = torch.randint(0, 3, (batch,), generator=generator)
    return x, y, torch.arange(batch)


def test_a_defense_step_fits_the_score_records_the_targets_and_trains_only_the_scheduler():
    defense = build_defense(_config())
    model = LinearClassifier(6, 3, seed=1)
    torch.manual_seed(0)
    first = defense.step(model, *_batch())
    assert int(defense.scheduler.targets_seen) == 1
    assert float(first.budget.eps.std()) > 0  # the uniform prior before any measurement
    first.loss.backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in defense.parameters())
    torch.manual_seed(1)
    second = defense.step(model, *_batch(seed=1))
    eps = second.budget.eps.double()
    assert float(eps.std()) > 0 and float(eps.mean()) == pytest.approx(EPS_MIN + LAM / 2, abs=1e-6)
    score = second.budget.score
    torch.testing.assert_close(second.target.prediction, score - score.mean())


# ---------------------------------------------------------------- the shuffled control


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**16))
def test_shuffling_hands_out_the_same_budgets_in_a_random_order(batch, seed):
    torch.manual_seed(seed)
    sigma = torch.rand(batch, requires_grad=True)
    learned = Budget.from_sigma(sigma, EPS_MIN, EPS_MIN + LAM)
    shuffled = shuffle_allocation(learned)
    assert torch.equal(shuffled.eps.detach().sort().values, learned.eps.detach().sort().values)
    assert torch.equal(shuffled.sigma.detach().sort().values, learned.sigma.detach().sort().values)
    weights = torch.arange(batch, dtype=torch.float32)
    (grad,) = torch.autograd.grad((weights * shuffled.sigma).sum(), sigma)
    torch.testing.assert_close(grad, weights)  # the gradient reaches each sample's own budget


def test_the_shuffled_arm_attacks_with_a_permutation_of_the_learned_budgets():
    learned = build_defense(_config())
    shuffled = build_defense(_config(shuffle=True))
    model = LinearClassifier(6, 3, seed=1)
    for defense in (learned, shuffled):  # one batch first, so the quantile table has a spread
        torch.manual_seed(0)
        defense.step(model, *_batch())
    shuffled.load_state_dict(learned.state_dict())
    torch.manual_seed(1)
    a = learned.step(model, *_batch(seed=1))
    torch.manual_seed(1)
    b = shuffled.step(model, *_batch(seed=1))
    assert torch.equal(a.budget.eps.sort().values, b.budget.eps.sort().values)
    assert not torch.equal(a.budget.eps, b.budget.eps)


def test_shuffle_needs_a_learnable_scheduler_and_excludes_reverse():
    with pytest.raises(ConfigError, match="--scheduler-shuffle controls a learned allocation"):
        RunConfig.from_dict({"defense": "static-des", "cues": {"names": "grad"}, "scheduler": {"shuffle": True}})
    with pytest.raises(ConfigError, match="exclude each other"):
        SchedulerOptions(reverse=True, shuffle=True)
