"""The ``target`` objective, the breaking radius it fits, and the reversed control.

The training PGD already computes the logits of its iterates; the radius of
the first iterate the model misclassified is each sample's measured
robustness target. These tests check that radius against a hand computation
on a linear model, that fitting the scheduler to it keeps every budget in
``[eps_min, eps_min + lam]`` with the batch mean held, that it leaves the
model's gradient alone, and that the reversed control negates each budget's
deviation from the mean exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ades_core import RunConfig, build_defense
from ades_core.attacks.breaking import BreakingRadius
from ades_core.attacks.pgd import PGD
from ades_core.config import BudgetConfig, ConfigError, SchedulerOptions
from ades_core.defenses.budgeted import reverse_allocation
from ades_core.engine.telemetry import r_squared, target_fit, target_warning
from ades_core.protocols import Budget, Cues
from ades_core.registries import SCHEDULER_OBJECTIVES
from ades_core.schedulers import MLPScheduler, RobustnessTargetFit
from ades_core.schedulers.objectives import with_grad_norm
from ades_core.schedulers.target import HOLDOUT_EVERY, TARGET_LR
from tests.strategies import cue_batches
from tests.tiny_models import MARGIN_W, LinearClassifier, two_class_margin_model

EPS_MIN, LAM = 4 / 255, 8 / 255


def _cues(values: torch.Tensor) -> Cues:
    return Cues(values, tuple(f"c{i}" for i in range(values.shape[1])))


# ---------------------------------------------------------------- the breaking radius


def _margin_batch(offsets: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``0.5 - u * sign(W)`` of class 0: ``z_1 - z_0 = -9 u`` (``||W||_1 = 9``)."""
    u = torch.tensor(offsets).view(-1, 1)
    x = (0.5 - u * MARGIN_W.sign()).view(-1, 1, 2, 3)
    return x, torch.zeros(len(offsets), dtype=torch.long)


def test_breaking_radius_is_the_distance_of_the_first_misclassified_iterate_by_hand():
    # Class 0 at robust margin 9u; PGD without random start moves every pixel by alpha * sign(W)
    # each step, so iterate k sits at distance min(k alpha, eps) and is misclassified once that
    # distance reaches u (a tie counts as broken).
    model = two_class_margin_model()
    alpha, eps, steps = 0.01, 0.035, 5
    offsets = [0.0, 0.005, 0.015, 0.025, 0.032, 0.05]
    x, y = _margin_batch(offsets)
    attack = PGD(steps=steps, alpha=alpha, random_start=False)
    breaking = BreakingRadius(x, y)
    x_adv = attack(model, x, y, torch.full((6,), eps), breaking=breaking)
    with torch.no_grad():
        breaking.observe(x_adv, model(x_adv))  # the last iterate: the caller's training forward

    expected = []
    for u in offsets:
        distances = [min(k * alpha, eps) for k in range(steps + 1)]
        expected.append(next((d for d in distances if d >= u), math.inf))
    assert expected == [0.0, 0.01, 0.02, 0.03, 0.035, math.inf]  # the hand computation
    torch.testing.assert_close(breaking.radius, torch.tensor(expected), atol=1e-6, rtol=0)
    assert breaking.broken.tolist() == [True] * 5 + [False]


def test_recording_the_breaking_radius_changes_nothing_about_the_attack():
    model = LinearClassifier(6, 3, seed=2)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 2, 3, generator=generator)
    y = torch.randint(0, 3, (8,), generator=generator)
    eps = torch.linspace(2 / 255, 12 / 255, 8)
    attack = PGD(steps=4, alpha=2 / 255)
    torch.manual_seed(5)
    plain = attack(model, x, y, eps)
    torch.manual_seed(5)
    recorded = attack(model, x, y, eps, breaking=BreakingRadius(x, y))
    assert torch.equal(plain, recorded)


def test_a_sample_broken_at_the_start_has_the_starts_distance_and_stays_so():
    model = two_class_margin_model()
    x, y = _margin_batch([0.0])
    start = x + 0.004 * MARGIN_W.sign().view(1, 1, 2, 3)  # further toward class 1
    breaking = BreakingRadius(x, y)
    breaking.observe(start, model(start))
    breaking.observe(x, model(x))  # a later iterate never overwrites the first break
    torch.testing.assert_close(breaking.radius, torch.tensor([0.004]))


# ---------------------------------------------------------------- the objective


def test_target_is_registered_with_its_own_learning_rate():
    assert "target" in SCHEDULER_OBJECTIVES
    assert SchedulerOptions(objective="target").learning_rate() == TARGET_LR
    assert SchedulerOptions(objective="allocate-min").learning_rate() == 1e-3
    assert SchedulerOptions(objective="target", lr=0.5).learning_rate() == 0.5
    objective = SCHEDULER_OBJECTIVES.build("target", SchedulerOptions(), budget=BudgetConfig())
    assert isinstance(objective, RobustnessTargetFit) and objective.allocation == "mean"


def test_target_maps_the_radius_to_sigma_with_censored_samples_at_eps_max():
    objective = RobustnessTargetFit(EPS_MIN, LAM)
    radius = torch.tensor([0.0, EPS_MIN, 8 / 255, 12 / 255, math.inf])
    target = objective.target_radius(radius)
    torch.testing.assert_close(target, torch.tensor([0.0, EPS_MIN, 8 / 255, 12 / 255, 12 / 255]))
    torch.testing.assert_close(objective.target_sigma(target), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert objective.held_out(torch.arange(17)).nonzero().flatten().tolist() == [0, 8, 16]
    assert HOLDOUT_EVERY == 8


def test_fit_loss_by_hand_ignores_held_out_samples():
    objective = RobustnessTargetFit(EPS_MIN, LAM, holdout_every=2)
    sigma = torch.tensor([0.4, 0.6, 0.5, 0.5], requires_grad=True)
    target = torch.tensor([1.0, 0.0, 0.2, 0.6])
    held = torch.tensor([True, False, False, False])
    # prediction deviations: -0.1, 0.1, 0, 0; target mean over the fitted: 0.8 / 3
    t = target - 0.8 / 3
    expected = ((0.1 - t[1]) ** 2 + (0 - t[2]) ** 2 + (0 - t[3]) ** 2) / (2 * 4)
    loss = objective.fit_loss(sigma, target, held)
    torch.testing.assert_close(loss, expected.float())


@settings(max_examples=40, deadline=None)
@given(cue_batches(max_batch=24), st.integers(0, 2**16), st.floats(0.01, 1.0))
def test_fitting_the_target_keeps_budgets_in_range_and_the_mean_held(values, seed, lr):
    torch.manual_seed(seed)
    scheduler = MLPScheduler(values.shape[1], hidden=8, eps_min=EPS_MIN, lam=LAM, allocation="mean", init_std=0.5)
    objective = RobustnessTargetFit(EPS_MIN, LAM)
    optimiser = torch.optim.Adam(scheduler.parameters(), lr=lr)
    batch = values.shape[0]
    radius = torch.where(torch.rand(batch) < 0.2, torch.inf, torch.rand(batch) * (EPS_MIN + LAM))
    target = objective.target_sigma(objective.target_radius(radius))
    held = objective.held_out(torch.arange(batch))
    for _ in range(4):
        budget = scheduler(_cues(values))
        eps = budget.eps.detach().double()
        assert bool(((budget.eps >= torch.tensor(EPS_MIN)) & (budget.eps <= torch.tensor(EPS_MIN + LAM))).all())
        assert float(eps.mean()) == pytest.approx(EPS_MIN + LAM / 2, abs=1e-6)
        optimiser.zero_grad()
        objective.fit_loss(budget.sigma, target, held).backward()
        optimiser.step()


def test_fitting_the_target_learns_to_give_robust_samples_more_budget():
    # One cue reveals the breaking radius: the fitted allocation must rank by it.
    torch.manual_seed(0)
    scheduler = MLPScheduler(1, hidden=16, eps_min=EPS_MIN, lam=LAM, allocation="mean")
    objective = RobustnessTargetFit(EPS_MIN, LAM)
    optimiser = torch.optim.Adam(scheduler.parameters(), lr=TARGET_LR)
    for _ in range(150):
        cue = torch.rand(64, 1)
        radius = EPS_MIN + LAM * cue.squeeze(1)
        target = objective.target_sigma(objective.target_radius(radius))
        optimiser.zero_grad()
        objective.fit_loss(scheduler(_cues(cue)).sigma, target, objective.held_out(torch.arange(1, 65))).backward()
        optimiser.step()
    cue = torch.linspace(0, 1, 33).unsqueeze(1)
    eps = scheduler(_cues(cue)).eps.detach()
    assert r_squared(cue.squeeze(1) - 0.5, (eps - eps.mean()) / LAM) > 0.8
    assert float(eps.std()) > 1.5 / 255


# ---------------------------------------------------------------- inside the defense


def _config(cue_point: str = "start", **scheduler) -> RunConfig:
    return RunConfig.from_dict(
        {
            "defense": "ades",
            "cues": {"names": "grad,entropy", "point": cue_point},
            "attack": {"steps": 3, "alpha": "2/255"},
            "budget": {"eps_min": "4/255", "lam": "8/255"},
            "scheduler": {"objective": "target", "init_std": 0.5, **scheduler},
        }
    )


def _batch(batch: int = 24, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 2, 3, generator=generator)
    y = torch.randint(0, 3, (batch,), generator=generator)
    return x, y, torch.arange(batch)


@pytest.mark.parametrize("cue_point", ["start", "clean"])
def test_the_fit_term_leaves_the_models_gradient_and_loss_unchanged(cue_point):
    defense = build_defense(_config(cue_point))
    model = LinearClassifier(6, 3, seed=1)
    x, y, idx = _batch()

    def run(fit: bool):
        torch.manual_seed(3)
        model.zero_grad()
        defense.zero_grad()
        defense.fits_target = fit  # without the fit: the same step, no scheduler term
        out = defense.step(model, x, y, idx)
        out.loss.backward()
        return out, model.fc.weight.grad.clone(), model.fc.bias.grad.clone()

    plain, weight_plain, bias_plain = run(False)
    fitted, weight_fit, bias_fit = run(True)
    defense.fits_target = True
    assert torch.equal(fitted.loss, plain.loss)  # J - J.detach() adds 0 to the value
    assert torch.equal(weight_fit, weight_plain) and torch.equal(bias_fit, bias_plain)
    assert torch.equal(fitted.budget.eps, plain.budget.eps)
    assert fitted.target is not None and plain.target is None
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in defense.parameters())


def test_the_defense_reports_a_target_within_the_range_and_holds_the_mean():
    defense = build_defense(_config())
    torch.manual_seed(0)
    out = defense.step(LinearClassifier(6, 3, seed=1), *_batch())
    target = out.target
    eps = out.budget.eps
    assert float(eps.double().mean()) == pytest.approx(EPS_MIN + LAM / 2, abs=1e-6)
    assert bool((target.radius[target.broken] <= eps[target.broken] + 1e-6).all())
    assert bool((target.radius[~target.broken] == EPS_MIN + LAM).all())
    assert target.held_out.tolist() == (torch.arange(24) % HOLDOUT_EVERY == 0).tolist()
    torch.testing.assert_close(target.prediction, out.budget.sigma - out.budget.sigma.mean())


def test_grad_norm_does_not_combine_with_the_target_objective():
    objective = RobustnessTargetFit(EPS_MIN, LAM)
    with pytest.raises(ConfigError, match="grad_norm"):
        with_grad_norm(objective, "rms")


def test_the_target_objective_needs_an_attack_that_reports_its_iterates():
    defense = build_defense(_config())

    class Opaque:
        def __call__(self, model, x, y, eps, **kwargs):
            return x

    from ades_core.defenses.budgeted import BudgetedAdversarialTraining, DefenseParts

    parts = DefenseParts(
        cues=defense.cue_extractors, scheduler=defense.scheduler, attack=Opaque(), objective=defense.objective
    )
    with pytest.raises(ValueError, match="does not report them"):
        BudgetedAdversarialTraining("ades", parts)


# ---------------------------------------------------------------- the reversed control


@settings(max_examples=60, deadline=None)
@given(cue_batches(max_batch=32), st.integers(0, 2**16), st.floats(0.01, 20.0))
def test_reversal_negates_each_deviation_exactly_within_the_range(values, seed, scale):
    torch.manual_seed(seed)
    scheduler = MLPScheduler(values.shape[1], hidden=8, eps_min=EPS_MIN, lam=LAM, allocation="mean", init_std=scale)
    learned = scheduler(_cues(values))
    flipped = reverse_allocation(learned)
    eps, rev = learned.eps.detach().double(), flipped.eps.detach().double()
    torch.testing.assert_close(rev - rev.mean(), -(eps - eps.mean()), atol=1e-7, rtol=0)
    assert float(rev.mean()) == pytest.approx(float(eps.mean()), abs=1e-7)
    # with the mean at the midpoint no clamp is needed: eps' = eps_min + eps_max - eps
    torch.testing.assert_close(rev, EPS_MIN + (EPS_MIN + LAM) - eps, atol=1e-7, rtol=0)
    sigma, flipped_sigma = learned.sigma.detach().double(), flipped.sigma.detach().double()
    torch.testing.assert_close(flipped_sigma, 1 - sigma, atol=3e-7, rtol=0)  # float32 rounding
    assert bool(((flipped.eps >= torch.tensor(EPS_MIN)) & (flipped.eps <= torch.tensor(EPS_MIN + LAM))).all())


def test_reversal_passes_the_gradient_to_the_learned_budget_unchanged():
    eps = torch.tensor([0.02, 0.03, 0.04], requires_grad=True)
    flipped = reverse_allocation(Budget(eps=eps, sigma=None, eps_min=EPS_MIN, eps_max=EPS_MIN + LAM))
    weights = torch.tensor([1.0, -2.0, 3.0])
    (grad,) = torch.autograd.grad((weights * flipped.eps).sum(), eps)
    torch.testing.assert_close(grad, weights)


def test_the_reversed_arm_attacks_with_the_reversed_budgets_of_the_same_scheduler():
    learned = build_defense(_config())
    reversed_arm = build_defense(_config(reverse=True))
    reversed_arm.load_state_dict(learned.state_dict())
    model = LinearClassifier(6, 3, seed=1)
    x, y, idx = _batch()
    torch.manual_seed(0)
    a = learned.step(model, x, y, idx)
    torch.manual_seed(0)
    b = reversed_arm.step(model, x, y, idx)
    torch.testing.assert_close(b.budget.eps, 2 * (EPS_MIN + LAM / 2) - a.budget.eps, atol=1e-7, rtol=0)
    # the scheduler is fitted on its own (unreversed) output: the prediction is the learned arm's
    torch.testing.assert_close(b.target.prediction, a.target.prediction)


def test_reverse_needs_a_learnable_scheduler():
    with pytest.raises(ConfigError, match="--scheduler-reverse"):  # when the config is built
        RunConfig.from_dict({"defense": "static-des", "cues": {"names": "grad"}, "scheduler": {"reverse": True}})


# ---------------------------------------------------------------- telemetry of the fit


def test_r_squared_and_the_target_record_by_hand():
    assert r_squared(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])) == 1.0
    assert r_squared(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0])) == 0.0
    assert r_squared(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])) is None
    # columns: deviation, prediction, radius, broken, held_out, present
    columns = torch.tensor(
        [
            [0.5, 0.25, 0.04, 0.0, 1.0, 1.0],
            [-0.5, -0.25, 0.02, 1.0, 1.0, 1.0],
            [0.1, 0.9, 0.03, 1.0, 0.0, 1.0],  # fitted, not scored
            [9.0, 9.0, 9.0, 1.0, 1.0, 0.0],  # never reported a target
        ]
    )
    record = target_fit(columns)
    assert record["samples"] == 3 and record["held_out"] == 2
    assert record["r2"] == pytest.approx(1 - (0.25**2 * 2) / 0.5)
    assert record["spearman"] == pytest.approx(1.0)
    assert record["radius_mean"] == pytest.approx(0.03) and record["broken"] == pytest.approx(2 / 3)
    assert target_fit(columns[3:]) is None


def test_a_fit_near_zero_r_squared_is_warned_about():
    assert "the cues do not predict robustness" in target_warning(0.01)
    assert target_warning(0.5) is None and target_warning(None) is None


def test_telemetry_records_the_held_out_fit_warns_and_resumes_it():
    from ades_core.engine.telemetry import BudgetTelemetry
    from ades_core.protocols import RobustnessTarget, StepOutput

    def step(idx: torch.Tensor, prediction: torch.Tensor, deviation: torch.Tensor) -> StepOutput:
        sigma = 0.5 + prediction
        budget = Budget.from_sigma(sigma, EPS_MIN, EPS_MIN + LAM)
        target = RobustnessTarget(
            radius=budget.eps,
            broken=torch.ones(len(idx), dtype=torch.bool),
            deviation=deviation,
            prediction=prediction,
            held_out=idx % 2 == 0,
        )
        return StepOutput(loss=torch.tensor(0.0), logits_adv=torch.zeros(len(idx), 2), budget=budget, target=target)

    telemetry = BudgetTelemetry(8, "cpu")
    idx = torch.arange(8)
    prediction = torch.tensor([0.1, -0.1, 0.2, -0.2, 0.1, -0.1, 0.2, -0.2])
    unrelated = torch.tensor([0.1, 0.3, -0.1, 0.3, -0.1, -0.2, 0.1, 0.0])  # r2 < 0 on the held-out
    telemetry.update(step(idx[:4], prediction[:4], unrelated[:4]), idx[:4])
    resumed = BudgetTelemetry(8, "cpu")
    resumed.load_state_dict(telemetry.state_dict())
    for t in (telemetry, resumed):
        t.update(step(idx[4:], prediction[4:], unrelated[4:]), idx[4:])
    records = [t.end_epoch(0) for t in (telemetry, resumed)]
    assert records[0]["target"] == records[1]["target"]
    held = idx % 2 == 0
    expected = r_squared(unrelated[held], prediction[held])
    assert records[0]["target"]["r2"] == pytest.approx(expected) and expected < 0
    assert records[0]["target"]["held_out"] == 4 and records[0]["target"]["samples"] == 8
    assert any("the cues do not predict robustness" in w for w in telemetry.warnings())

    telemetry.update(step(idx, prediction, prediction), idx)  # a perfect fit: no warning
    assert telemetry.end_epoch(1)["target"]["r2"] == pytest.approx(1.0)
    assert not any("robustness" in w for w in telemetry.warnings())
