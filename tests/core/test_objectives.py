"""Scheduler objectives, their knobs and the random control.

The envelope theorem says ``dL_i/d eps_i >= 0`` at the attack's maximiser; each
objective turns that derivative into the gradient its scheduler descends. On
the real envelope path (``envelope_input`` inside ``BudgetedAdversarialTraining``)
and on toy losses whose derivative is known, these tests check what each
objective rewards, that every budget stays in ``[eps_min, eps_min + lam]``,
that fixed-mean objectives hold the mean, and that the knobs do what they say.
"""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ades_cli.main import cli
from ades_cli.options import option_for_field, overrides_from_options
from ades_core import RunConfig, build_defense
from ades_core.config import BudgetConfig, ConfigError, SchedulerOptions
from ades_core.protocols import Cues, Scheduler
from ades_core.registries import SCHEDULER_OBJECTIVES, SCHEDULERS
from ades_core.schedulers import MLPScheduler, RandomAllocation, SchedulerObjective, attach_objective
from ades_core.schedulers.objectives import GradNormalised, LossTarget, with_grad_norm
from ades_core.schedulers.random import MAX_STD, antithetic_uniform
from tests.strategies import cue_batches
from tests.tiny_models import LinearClassifier

EPS_MIN, LAM = 4 / 255, 8 / 255
MEAN_OBJECTIVES = ("allocate-max", "allocate-min", "loss-target", "saturating")
FREE_OBJECTIVES = ("paper", "penalty")
FITTED_OBJECTIVES = ("target", "target-quantile", "lookahead")  # learn from their own term, not dL/d eps: test_target_objective.py, test_lookahead.py
ENVELOPE_OBJECTIVES = sorted(set(SCHEDULER_OBJECTIVES.names()) - set(FITTED_OBJECTIVES))


def _cues(values: torch.Tensor) -> Cues:
    return Cues(values, tuple(f"c{i}" for i in range(values.shape[1])))


def _objective(name: str, **options) -> SchedulerObjective:
    return SCHEDULER_OBJECTIVES.build(name, SchedulerOptions(**options), budget=BudgetConfig())


class Recording:
    """Wraps an objective and keeps what it was given and what it returned."""

    def __init__(self, objective: SchedulerObjective) -> None:
        self.objective = objective
        self.allocation = objective.allocation
        self.calls: list[dict[str, torch.Tensor]] = []

    def eps_grad(self, grad, eps, per_sample_loss):
        out = self.objective.eps_grad(grad, eps, per_sample_loss)
        self.calls.append({"grad": grad, "eps": eps, "loss": per_sample_loss, "out": out})
        return out


# ---------------------------------------------------------------- on the real envelope path


def _defense(objective: str, steps: int = 10):
    config = RunConfig.from_dict(
        {
            "defense": "ades",
            "cues": {"names": "grad,entropy", "point": "clean"},
            "attack": {"steps": steps, "alpha": "2/255", "random_start": False},
            "budget": {"eps_min": "4/255", "lam": "8/255"},
            "scheduler": {"objective": objective, "hidden": 8, "init_std": 0.3},
        }
    )
    torch.manual_seed(0)
    defense = build_defense(config)
    defense.objective = Recording(defense.objective)
    return defense


def _batch(batch: int = 32):
    generator = torch.Generator().manual_seed(1)
    x = 0.25 + 0.5 * torch.rand(batch, 1, 2, 3, generator=generator)  # far from the [0, 1] box
    y = torch.randint(0, 2, (batch,), generator=generator)
    return x, y, torch.arange(batch)


def _one_scheduler_step(objective: str, lr: float):
    """sigma before and after one SGD step of the scheduler, and what the objective saw."""
    defense = _defense(objective)
    model = LinearClassifier(6, 2, seed=3)
    x, y, idx = _batch()
    before = defense.step(model, x, y, idx)
    before.loss.backward()
    torch.optim.SGD(defense.parameters(), lr=lr).step()
    after = defense.step(model, x, y, idx)
    call = defense.objective.calls[0]
    return before.budget.sigma, after.budget.sigma, call


def test_envelope_gradient_is_non_negative_at_the_pgd_maximiser():
    # For a two-class linear model the maximiser is x + eps * sign(w_other - w_y), which
    # PGD without random start reaches in eps / alpha steps: a larger ball never lowers it.
    _, _, call = _one_scheduler_step("paper", lr=0.0)
    assert (call["grad"] >= 0).all()
    assert (call["grad"] > 0).float().mean() > 0.9


def test_paper_pushes_every_sigma_down_after_one_step():
    # descend L with dL/d eps >= 0: with ReLU features and cues >= 0, every pair of
    # samples shares a non-negative tangent kernel, so every sigma falls.
    before, after, _ = _one_scheduler_step("paper", lr=0.5)
    assert (after < before).all()


@pytest.mark.parametrize(("objective", "sign"), [("allocate-max", +1), ("allocate-min", -1)])
def test_allocating_objectives_move_budget_by_the_envelope_gradient(objective, sign):
    before, after, call = _one_scheduler_step(objective, lr=0.5)
    d = call["grad"]
    moved = after - before
    assert abs(float(after.mean()) - 0.5) < 1e-6 and abs(float(before.mean()) - 0.5) < 1e-6
    # allocate-max: budget flows to the samples whose loss grows fastest (positive
    # covariance of the change with dL/d eps); allocate-min: the other way.
    assert sign * float((moved * (d - d.mean())).sum()) > 0


@pytest.mark.parametrize("objective", ENVELOPE_OBJECTIVES)
def test_one_small_step_descends_every_objective(objective):
    before, after, call = _one_scheduler_step(objective, lr=0.05)
    moved_eps = LAM * (after - before)
    assert float((call["out"] * moved_eps).sum()) < 0


# ---------------------------------------------------------------- on toy losses


def _toy_loss(eps: torch.Tensor, slope: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``L_i = offset_i + slope_i * eps_i / LAM``: its envelope derivative is ``slope_i / LAM``."""
    return offset + slope * eps / LAM


def _toy_step(scheduler, objective, cues, slope, offset, optimiser, scale: float = 1.0) -> torch.Tensor:
    budget = scheduler(cues)
    per_sample = _toy_loss(budget.eps, slope, offset)
    attach_objective(objective, budget.eps, per_sample)
    optimiser.zero_grad()
    (scale * per_sample.mean()).backward()
    optimiser.step()
    return budget.eps.detach()


@settings(max_examples=40, deadline=None)
@given(
    cue_batches(),
    st.sampled_from(ENVELOPE_OBJECTIVES),
    st.sampled_from(["none", "rms"]),
    st.integers(0, 2**16),
    st.floats(0.1, 30.0),
)
def test_every_objective_keeps_budgets_in_range_and_fixed_means_hold(values, name, grad_norm, seed, scale):
    torch.manual_seed(seed)
    objective = with_grad_norm(_objective(name), grad_norm)
    scheduler = MLPScheduler(
        values.shape[1], hidden=8, eps_min=EPS_MIN, lam=LAM, allocation=objective.allocation
    )
    with torch.no_grad():  # large weights saturate the sigmoid
        for p in scheduler.parameters():
            p.mul_(scale)
    batch = values.shape[0]
    slope, offset = torch.randn(batch).abs(), 3 * torch.rand(batch)
    optimiser = torch.optim.SGD(scheduler.parameters(), lr=10.0)
    cues = _cues(values)
    for _ in range(2):
        _toy_step(scheduler, objective, cues, slope, offset, optimiser)
    eps = scheduler(cues).eps.detach()
    low, high = torch.tensor(EPS_MIN), torch.tensor(EPS_MIN + LAM)
    assert bool(((eps >= low) & (eps <= high)).all())
    if objective.allocation == "mean":
        target = EPS_MIN + LAM / 2
        assert float(eps.double().mean()) == pytest.approx(target, rel=1e-6)


def test_objectives_use_the_allocation_their_docs_name():
    for name in MEAN_OBJECTIVES:
        assert _objective(name).allocation == "mean", name
    for name in FREE_OBJECTIVES:
        assert _objective(name).allocation == "free", name
    assert all(isinstance(_objective(n), SchedulerObjective) for n in SCHEDULER_OBJECTIVES)


@pytest.mark.parametrize("start_bias", [-2.2, +2.2])  # mean sigma starts near 0.1 or 0.9
def test_penalty_pulls_the_mean_budget_to_the_middle_of_the_range(start_bias):
    torch.manual_seed(0)
    cues = _cues(torch.rand(64, 2))
    slope, offset = 0.2 + torch.rand(64), torch.rand(64)
    scheduler = MLPScheduler(2, hidden=8, eps_min=EPS_MIN, lam=LAM, allocation="free")
    with torch.no_grad():
        scheduler.net[2].bias.fill_(start_bias)
    objective = _objective("penalty", penalty=100.0)
    optimiser = torch.optim.Adam(scheduler.parameters(), lr=0.05)
    means = [
        float(_toy_step(scheduler, objective, cues, slope, offset, optimiser).mean()) for _ in range(150)
    ]
    middle = EPS_MIN + LAM / 2
    assert abs(means[0] - middle) > 0.3 * LAM
    assert abs(means[-1] - middle) < 0.02 * LAM
    # at rest the mean sits lam * mean(dL/d eps) / mu above the middle, in sigma units
    rest = middle + LAM * LAM * float((slope / LAM).mean()) / 100.0
    assert means[-1] == pytest.approx(rest, abs=0.01 * LAM)


def test_without_the_penalty_ascending_the_loss_drives_the_mean_budget_up():
    torch.manual_seed(0)
    cues = _cues(torch.rand(64, 2))
    slope, offset = 0.2 + torch.rand(64), torch.rand(64)
    scheduler = MLPScheduler(2, hidden=8, eps_min=EPS_MIN, lam=LAM, allocation="free")
    optimiser = torch.optim.Adam(scheduler.parameters(), lr=0.05)
    objective = _objective("penalty", penalty=0.0)
    for _ in range(60):
        eps = _toy_step(scheduler, objective, cues, slope, offset, optimiser)
    assert float(eps.mean()) > EPS_MIN + 0.9 * LAM


def test_loss_target_raises_budgets_below_rho_and_lowers_them_above():
    grad = torch.tensor([2.0, 1.0, 3.0, 0.5])
    loss = torch.tensor([0.5, 1.0, 2.0, 3.0])
    eps = torch.full((4,), 8 / 255)
    v = _objective("loss-target", target_loss=1.5).eps_grad(grad, eps, loss)
    torch.testing.assert_close(v, (loss - 1.5) * grad)  # descending: up where L < rho, down above
    median = _objective("loss-target").eps_grad(grad, eps, loss)
    torch.testing.assert_close(median, (loss - 1.0) * grad)  # rho: the batch median (lower middle)


def test_saturating_gain_rewards_budget_only_below_rho():
    grad = torch.tensor([2.0, 1.0, 3.0, 0.5])
    loss = torch.tensor([0.5, 1.0, 2.0, 3.0])
    v = _objective("saturating", target_loss=1.5).eps_grad(grad, torch.zeros(4), loss)
    torch.testing.assert_close(v, torch.tensor([-2.0, -1.0, 0.0, 0.0]))


def test_loss_target_gives_low_loss_samples_more_budget_over_training():
    # a cue that reveals each sample's loss level: the scheduler can learn it
    torch.manual_seed(0)
    level = torch.rand(128)
    cues = _cues(level.unsqueeze(1))
    slope, offset = torch.ones(128), 1.0 + 2.0 * level
    scheduler = MLPScheduler(1, hidden=8, eps_min=EPS_MIN, lam=LAM, allocation="mean")
    optimiser = torch.optim.Adam(scheduler.parameters(), lr=0.02)
    objective = _objective("loss-target")
    for _ in range(100):
        eps = _toy_step(scheduler, objective, cues, slope, offset, optimiser)
    centred = (eps - eps.mean(), level - level.mean())
    correlation = float((centred[0] * centred[1]).sum() / (centred[0].norm() * centred[1].norm()))
    assert correlation < -0.9
    assert float(eps.std()) > 0.1 * LAM


@pytest.mark.parametrize("name", ENVELOPE_OBJECTIVES)
def test_the_scheduler_gradient_carries_the_training_losss_scale(name):
    # an fp16 loss scale multiplies every gradient; GradScaler divides it out of the
    # scheduler's too, so the objective's gradient must scale with the loss, penalty included
    grads = []
    for scale in (1.0, 1024.0):
        torch.manual_seed(0)
        allocation = _objective(name).allocation
        scheduler = MLPScheduler(2, hidden=4, eps_min=EPS_MIN, lam=LAM, allocation=allocation)
        optimiser = torch.optim.SGD(scheduler.parameters(), lr=0.0)
        cues = _cues(torch.rand(16, 2))
        slope, offset = torch.rand(16), torch.rand(16)
        _toy_step(scheduler, _objective(name), cues, slope, offset, optimiser, scale=scale)
        grads.append(torch.cat([p.grad.flatten() for p in scheduler.parameters()]))
    torch.testing.assert_close(grads[1], 1024.0 * grads[0], rtol=1e-4, atol=1e-9)


def test_rms_normalisation_makes_the_update_independent_of_the_losss_size():
    grads = []
    for steepness in (1.0, 50.0):
        torch.manual_seed(0)
        scheduler = MLPScheduler(2, hidden=4, eps_min=EPS_MIN, lam=LAM, allocation="mean")
        optimiser = torch.optim.SGD(scheduler.parameters(), lr=0.0)
        cues = _cues(torch.rand(16, 2))
        slope, offset = steepness * torch.rand(16), torch.rand(16)
        objective = with_grad_norm(_objective("allocate-max"), "rms")
        _toy_step(scheduler, objective, cues, slope, offset, optimiser)
        grads.append(torch.cat([p.grad.flatten() for p in scheduler.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-9)


def test_rms_normalised_gradients_have_unit_rms_and_keep_signs():
    objective = GradNormalised(LossTarget(target=1.0))
    grad, loss = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.0, 2.0, 1.0])
    v = objective.eps_grad(grad, torch.zeros(3), loss)
    assert float(v.square().mean()) == pytest.approx(1.0)
    assert torch.equal(v.sign(), torch.tensor([-1.0, 1.0, 0.0]))
    assert objective.allocation == "mean"
    zero = objective.eps_grad(torch.zeros(3), torch.zeros(3), loss)
    assert torch.equal(zero, torch.zeros(3))


# ---------------------------------------------------------------- knobs through the builder


def _ades_config(**scheduler) -> RunConfig:
    return RunConfig.from_dict({"defense": "ades", "cues": {"names": "grad,entropy"}, "scheduler": scheduler})


def test_the_builder_hands_the_knobs_to_the_objective_and_the_scheduler():
    defense = build_defense(
        _ades_config(objective="loss-target", target_loss=1.5, grad_norm="rms", init_std=0.0)
    )
    assert isinstance(defense.objective, GradNormalised)
    assert defense.objective.objective == LossTarget(target=1.5)
    assert defense.scheduler.allocation == "mean"
    assert torch.equal(defense.scheduler.net[2].weight, torch.zeros_like(defense.scheduler.net[2].weight))
    penalty = build_defense(_ades_config(objective="penalty", penalty=7.0)).objective
    assert penalty.weight == 7.0 and penalty.lam == pytest.approx(8 / 255)


def test_init_std_sets_the_starting_spread_of_sigma():
    cues = _cues(torch.rand(256, 3))
    torch.manual_seed(0)
    flat = MLPScheduler(3, hidden=16, eps_min=EPS_MIN, lam=LAM, init_std=0.0)(cues).sigma
    assert torch.equal(flat, torch.full_like(flat, 0.5))
    torch.manual_seed(0)
    wide = MLPScheduler(3, hidden=16, eps_min=EPS_MIN, lam=LAM, init_std=3.0)(cues).sigma
    assert float(wide.detach().std()) > 0.1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("init_std", -0.1, "init_std: must be a number in [0, inf)"),
        ("grad_norm", "l2", "grad_norm: 'l2' is not one of: none, rms"),
        ("target_loss", -1.0, "target_loss: must be a loss level >= 0"),
        ("target_loss", "high", "target_loss: must be a loss level >= 0"),
        ("penalty", -1.0, "penalty: must be a number in [0, inf)"),
        ("penalty", float("nan"), "penalty: must be a number"),
        ("random_std", 0.5, "random_std: must be a number in [0, 0.288675]"),
    ],
)
def test_bad_scheduler_knobs_fail_naming_the_field(field, value, message):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict({"scheduler": {field: value}})
    assert str(error.value).startswith(f"scheduler.{message}")


def test_scheduler_knobs_map_to_their_cli_options():
    options = {
        "scheduler_init_std": 0.1,
        "scheduler_objective": "allocate-min",  # the default (target-quantile) refuses grad_norm rms
        "scheduler_grad_norm": "rms",
        "scheduler_target_loss": 2.0,
        "scheduler_penalty": 10.0,
        "scheduler_random_std": 0.2,
    }
    config = RunConfig.from_dict(overrides_from_options(options))
    assert (config.scheduler.init_std, config.scheduler.grad_norm) == (0.1, "rms")
    assert (config.scheduler.target_loss, config.scheduler.penalty) == (2.0, 10.0)
    assert config.scheduler.random_std == 0.2
    for option in options:
        field = option.removeprefix("scheduler_")
        assert option_for_field(f"scheduler.{field}") == "--" + option.replace("_", "-")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler-grad-norm", "l2"], "'l2' is not one of 'none', 'rms'"),
        (["--scheduler-random-std", "0.5"], "--scheduler-random-std: must be a number in [0, 0.288675]"),
        (["--scheduler-penalty", "-1"], "--scheduler-penalty: must be a number in [0, inf)"),
        (["--scheduler-objective", "nope"], "unknown scheduler objective 'nope'"),
    ],
)
def test_bad_scheduler_options_exit_with_one_line(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path / "run"), "--quiet", *args])
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the random control


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.floats(0.0, MAX_STD), st.integers(0, 2**16))
def test_random_allocation_stays_in_range_with_mean_one_half(batch, std, seed):
    torch.manual_seed(seed)
    budget = RandomAllocation(std=std, eps_min=EPS_MIN, lam=LAM)(Cues.empty(batch, "cpu"))
    sigma = budget.sigma
    assert bool(((sigma >= 0) & (sigma <= 1)).all())
    assert bool(((budget.eps >= torch.tensor(EPS_MIN)) & (budget.eps <= torch.tensor(EPS_MIN + LAM))).all())
    assert float(sigma.double().mean()) == pytest.approx(0.5, abs=1e-6)
    assert float((sigma - 0.5).abs().max()) <= math.sqrt(3) * std + 1e-6


def test_random_allocation_is_uniform_with_the_asked_spread_and_fresh_every_step():
    torch.manual_seed(0)
    scheduler = RandomAllocation(std=0.2, eps_min=EPS_MIN, lam=LAM)
    cues = Cues.empty(20_000, "cpu")
    first, second = scheduler(cues).sigma, scheduler(cues).sigma
    assert float(first.std()) == pytest.approx(0.2, rel=0.02)
    half_width = math.sqrt(3) * 0.2
    counts = torch.histc(first, bins=4, min=0.5 - half_width, max=0.5 + half_width)
    assert float(counts.min()) > 0.95 * 5_000  # four equal bins: uniform
    assert not torch.equal(first, second)
    assert list(scheduler.parameters()) == []
    assert isinstance(scheduler, Scheduler)


def test_antithetic_draws_refuse_a_spread_beyond_the_range():
    with pytest.raises(ValueError, match="std of sigma must be in"):
        antithetic_uniform(4, 0.3, "cpu")


@pytest.mark.parametrize("defense", ["static-des", "pgd-at"])
def test_the_random_control_trains_under_a_fixed_scheduler_defense(defense):
    config = RunConfig.from_dict(
        {
            "defense": defense,
            "cues": {"names": "grad,entropy"},
            "attack": {"steps": 2},
            "scheduler": {"name": "random", "random_std": 0.25},
        }
    )
    built = build_defense(config)
    assert isinstance(built.scheduler, RandomAllocation) and built.objective is None
    x, y, idx = _batch(16)
    out = built.step(LinearClassifier(6, 2), x, y, idx)
    assert float(out.budget.eps.mean()) == pytest.approx(EPS_MIN + LAM / 2, abs=1e-7)
    assert float(out.budget.eps.std()) > 0


def test_the_random_control_is_not_learnable():
    assert not SCHEDULERS.entry("random").info.learnable
    with pytest.raises(ConfigError, match="needs a learnable scheduler, got 'random'"):
        RunConfig.from_dict({"defense": "ades", "scheduler": {"name": "random"}})
