"""PGD with per-sample budgets: always in the ball and the box, model left as it was."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ades_core.attacks import PGD
from ades_core.protocols import BudgetedAttack
from tests.strategies import image_batches
from tests.tiny_models import DropoutBNNet, LinearClassifier

ROUNDING = 1e-6  # float32 rounding of x +- eps (an ulp near 1 is 1.2e-7)


def _within_bounds(x, x_adv, eps):
    radius = eps.view(-1, *([1] * (x.ndim - 1)))
    return bool(((x_adv - x).abs() <= radius + ROUNDING).all()) and bool(
        ((x_adv >= 0) & (x_adv <= 1)).all()
    )


@settings(max_examples=60, deadline=None)
@given(image_batches(), st.data(), st.sampled_from(["ce", "cw"]), st.booleans())
def test_pgd_respects_each_samples_budget_and_the_box(x, data, loss, random_start):
    batch = x.shape[0]
    eps = torch.tensor(data.draw(st.lists(st.floats(0.0, 1.0), min_size=batch, max_size=batch)))
    alpha = data.draw(st.floats(1e-3, 1.0))
    model = LinearClassifier(x[0].numel(), 3, seed=data.draw(st.integers(0, 100)))
    y = torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=batch, max_size=batch)))
    x_adv = PGD(steps=3, alpha=alpha, random_start=random_start, loss=loss)(model, x, y, eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert _within_bounds(x, x_adv, eps)


@settings(max_examples=20, deadline=None)
@given(image_batches(channels=st.just(3)), st.floats(0.0, 1.0))
def test_pgd_under_bf16_autocast_still_projects_in_float32(x, eps):
    model = DropoutBNNet(channels=3)
    y = torch.zeros(x.shape[0], dtype=torch.long)
    attack = PGD(steps=2, alpha=0.5, autocast_dtype=torch.bfloat16)
    x_adv = attack(model, x, y, eps)
    assert x_adv.dtype == torch.float32
    assert _within_bounds(x, x_adv, torch.full((x.shape[0],), eps))


def test_pgd_reaches_the_closed_form_optimum_of_a_linear_binary_model():
    # logits (w1 x, w0 x): CE of class 0 grows along sign(w1 - w0); far from the box
    # the L-inf maximiser is x + eps * sign(w1 - w0).
    model = LinearClassifier(6, 2, seed=3)
    x = torch.full((2, 1, 2, 3), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    eps = torch.tensor([0.05, 0.1])
    x_adv = PGD(steps=10, alpha=0.02, random_start=True)(model, x, y, eps)
    direction = (model.fc.weight[1] - model.fc.weight[0]).sign().view(1, 2, 3)
    expected = x + eps.view(2, 1, 1, 1) * direction
    torch.testing.assert_close(x_adv, expected)


def test_pgd_restores_every_submodules_mode_and_leaves_parameter_grads_alone():
    model = DropoutBNNet()
    model.train()
    model.bn.eval()  # mixed modes must come back exactly
    bn_stats = model.bn.running_mean.clone()
    x = torch.rand(4, 3, 5, 5)
    y = torch.tensor([0, 1, 2, 3])
    PGD(steps=2, alpha=0.01)(model, x, y, 0.03)
    assert model.training and model.drop.training and not model.bn.training
    torch.testing.assert_close(model.bn.running_mean, bn_stats)
    assert all(p.grad is None for p in model.parameters())


def test_pgd_restores_modes_after_an_exception():
    model = DropoutBNNet()
    model.train()

    def broken_loss(logits, y):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        PGD(steps=1, alpha=0.01, loss=broken_loss)(model, torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), 0.1)
    assert all(m.training for m in model.modules())


def test_zero_budget_returns_the_input():
    model = LinearClassifier(4, 3)
    x = torch.rand(3, 1, 2, 2)
    x_adv = PGD(steps=3, alpha=0.1)(model, x, torch.tensor([0, 1, 2]), torch.zeros(3))
    torch.testing.assert_close(x_adv, x)


def test_a_budget_of_the_wrong_shape_is_refused():
    model = LinearClassifier(4, 3)
    with pytest.raises(ValueError, match=r"\(B,\) = \(3,\) tensor, got shape \(2,\)"):
        PGD(steps=1, alpha=0.1)(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 2]), torch.ones(2))


def test_pgd_satisfies_the_protocol_and_validates_its_settings():
    assert isinstance(PGD(steps=1, alpha=0.1), BudgetedAttack)
    with pytest.raises(ValueError, match="steps"):
        PGD(steps=0, alpha=0.1)
    with pytest.raises(ValueError, match="alpha"):
        PGD(steps=1, alpha=0.0)


def test_pgd_lowers_accuracy_of_a_trained_model():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 2, 2)
    y = (x.flatten(1).sum(1) > 2).long()
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(200):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    clean = (model(x).argmax(1) == y).float().mean()
    x_adv = PGD(steps=10, alpha=0.02)(model, x, y, 0.1)
    robust = (model(x_adv).argmax(1) == y).float().mean()
    assert clean > 0.9 and robust < clean - 0.2
