"""IAAT: per-sample budgets kept by dataset index, moved by the paper's three-point rule.

A two-class linear model whose samples sit at known L-inf distances from the
boundary (``|w.x + b| / ||w||_1``) tells which samples resist and which break
at a given budget, so each branch of the rule is checked exactly.
"""

from __future__ import annotations

import pytest
import torch

from ades_core import RunConfig, build_defense
from ades_core.protocols import Defense
from tests.tiny_models import LinearClassifier, images_at_margins, two_class_margin_model

EPS, GAMMA, BETA = 8 / 255, 1.9 / 255, 0.1


def _defense(num_samples: int = 8, **options):
    config = RunConfig.from_dict(
        {
            "defense": "iaat",
            "budget": {"eps": EPS},
            "attack": {"steps": 10, "alpha": "2/255"},
            "defense_options": {"iaat_warmup": 0, "iaat_gamma": GAMMA, "iaat_beta": BETA, **options},
        }
    )
    return build_defense(config, num_samples=num_samples)


# distance to the boundary -> what happens at the stored budget 8/255 and at 8/255 + gamma
ROBUST = 20 / 255  # resists at 9.9/255: the budget grows
BETWEEN = 9 / 255  # resists at 8/255, breaks at 9.9/255: the budget stays
FRAGILE = 4 / 255  # breaks at 8/255: the budget shrinks


def test_the_budget_grows_for_a_sample_that_resists_and_shrinks_for_one_that_breaks():
    x = images_at_margins([ROBUST, BETWEEN, FRAGILE, ROBUST])
    y = torch.tensor([0, 0, 0, 1])  # the last one is misclassified
    idx = torch.tensor([5, 1, 6, 2])
    defense = _defense()
    defense.budgets[idx] = EPS
    out = defense.step(two_class_margin_model(), x, y, idx)
    expected = torch.tensor(
        [
            BETA * (EPS + GAMMA) + (1 - BETA) * EPS,  # grows by beta * gamma
            EPS,  # stays
            BETA * (EPS - GAMMA) + (1 - BETA) * EPS,  # shrinks by beta * gamma
            (1 - BETA) * EPS,  # misclassified: the proposal is 0
        ]
    )
    torch.testing.assert_close(out.budget.eps, expected)
    torch.testing.assert_close(defense.budgets[idx], expected)
    assert (defense.budgets[[0, 3, 4, 7]] == 0).all(), "other samples' budgets are untouched"


def test_budgets_keep_moving_visit_after_visit_and_stay_within_bounds():
    x = images_at_margins([ROBUST, FRAGILE])
    y, idx = torch.zeros(2, dtype=torch.long), torch.tensor([0, 1])
    defense = _defense(num_samples=2, iaat_max_eps=9 / 255)
    defense.budgets[:] = EPS
    model = two_class_margin_model()
    history = [defense.budgets.clone()]
    for _ in range(5):
        defense.step(model, x, y, idx)
        history.append(defense.budgets.clone())
    robust, fragile = torch.stack(history).unbind(1)
    assert (robust.diff() > 0).all() and robust.max() <= 9 / 255 + 1e-7
    assert (fragile.diff() < 0).all() and fragile.min() >= 0


def test_warm_up_uses_the_fixed_budget_for_correct_samples_and_zero_for_the_others():
    x = images_at_margins([ROBUST, FRAGILE, ROBUST])
    y = torch.tensor([0, 0, 1])
    defense = _defense(iaat_warmup=2)
    assert torch.equal(defense.budgets, torch.zeros(8)), "budgets start at 0"
    defense.start_epoch(1, 10)
    out = defense.step(two_class_margin_model(), x, y, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(out.budget.eps, torch.tensor([EPS, EPS, 0.0]))
    torch.testing.assert_close(defense.budgets[:3], out.budget.eps)
    defense.start_epoch(2, 10)
    assert not defense.warming_up


def test_budgets_survive_a_state_dict_round_trip():
    defense = _defense()
    defense.budgets[:] = torch.linspace(0, EPS, 8)
    fresh = _defense()
    fresh.load_state_dict(defense.state_dict())
    assert torch.equal(fresh.budgets, defense.budgets)


def test_iaat_satisfies_the_protocol_and_keeps_train_mode():
    defense = _defense()
    assert isinstance(defense, Defense)
    model = LinearClassifier(6, 3).train()
    out = defense.step(model, 0.25 + 0.5 * torch.rand(8, 1, 2, 3), torch.randint(0, 3, (8,)), torch.arange(8))
    out.loss.backward()
    assert model.training and torch.isfinite(model.fc.weight.grad).all()


def test_iaat_needs_the_training_set_size():
    with pytest.raises(ValueError, match="iaat keeps one budget per training sample"):
        _defense(num_samples=0)
