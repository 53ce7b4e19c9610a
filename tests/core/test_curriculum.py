"""CAT: the budget (and optionally the PGD steps) rise over the epochs, monotonically, to the run's own."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ades_core import RunConfig, build_defense
from ades_core.defenses.curriculum import CurriculumSchedule, ramp_fraction
from ades_core.protocols import Defense
from tests.tiny_models import LinearClassifier

EPS = 8 / 255


@settings(max_examples=40, deadline=None)
@given(
    epochs=st.integers(1, 200),
    ramp=st.floats(0.01, 1.0),
    steps=st.integers(1, 20),
    raise_steps=st.booleans(),
)
def test_the_schedule_is_monotone_and_reaches_the_final_budget_and_steps(epochs, ramp, steps, raise_steps):
    schedule = CurriculumSchedule(eps=EPS, steps=steps, ramp=ramp, raise_steps=raise_steps)
    plan = [schedule.at(t, epochs) for t in range(epochs)]
    budgets, step_counts = [p[0] for p in plan], [p[1] for p in plan]
    assert all(a <= b for a, b in zip(budgets, budgets[1:]))
    assert all(a <= b for a, b in zip(step_counts, step_counts[1:]))
    assert 0 < budgets[0] and all(b <= EPS for b in budgets)
    assert all(1 <= k <= steps for k in step_counts)
    full_from = max(1, math.ceil(ramp * epochs)) - 1  # the last ramp epoch
    assert budgets[full_from:] == [EPS] * (epochs - full_from)
    assert step_counts[-1] == steps
    if not raise_steps:
        assert set(step_counts) == {steps}


def test_a_ten_epoch_ramp_rises_linearly():
    fractions = [ramp_fraction(t, 20, 0.5) for t in range(12)]
    assert fractions == pytest.approx([k / 10 for k in range(1, 11)] + [1, 1])


def _defense(**options):
    config = RunConfig.from_dict(
        {
            "defense": "cat",
            "budget": {"eps": EPS},
            "attack": {"steps": 10},
            "defense_options": {"cat_ramp": 0.5, **options},
        }
    )
    return build_defense(config)


def test_the_defense_trains_at_the_epochs_budget_with_the_epochs_steps():
    defense = _defense(cat_steps=True)
    assert isinstance(defense, Defense)
    model = LinearClassifier(6, 3).train()
    x, y = 0.25 + 0.5 * torch.rand(8, 1, 2, 3), torch.randint(0, 3, (8,))
    for epoch, (fraction, steps) in {0: (0.1, 1), 4: (0.5, 5), 15: (1.0, 10)}.items():
        defense.start_epoch(epoch, 20)
        out = defense.step(model, x, y, torch.arange(8))
        torch.testing.assert_close(out.budget.eps, torch.full((8,), fraction * EPS))
        assert defense.attack.steps == steps
        x_adv_gap = (defense.attack(model, x, y, out.budget.eps) - x).abs().amax()
        assert x_adv_gap <= fraction * EPS + 1e-6
    assert model.training


def test_without_a_call_to_start_epoch_there_is_no_curriculum():
    x, y = torch.rand(4, 1, 2, 3), torch.zeros(4, dtype=torch.long)
    out = _defense().step(LinearClassifier(6, 3), x, y, torch.arange(4))
    torch.testing.assert_close(out.budget.eps, torch.full((4,), EPS))


@pytest.mark.parametrize("ramp", [0.0, 1.5])
def test_a_ramp_outside_zero_one_is_refused(ramp):
    from ades_core.config import ConfigError

    with pytest.raises(ConfigError, match=r"cat_ramp: must be a number in \(0, 1\]"):
        _defense(cat_ramp=ramp)
