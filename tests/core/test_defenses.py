"""Defenses: PGD-AT, Static-DES and ADES, and the envelope-theorem gradient that trains ADES."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ades_core import RunConfig, build_defense
from ades_core.defenses import envelope_input
from ades_core.protocols import Defense
from tests.tiny_models import LinearClassifier


def _config(defense: str, **sections) -> RunConfig:
    raw = {
        "defense": defense,
        "cues": {"names": "grad,entropy"},
        "attack": {"steps": 3, "alpha": "2/255", "random_start": False},
        "budget": {"eps": "8/255", "eps_min": "4/255", "lam": "8/255"},
    }
    raw.update(sections)
    return RunConfig.from_dict(raw)


def _batch(batch: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = 0.25 + 0.5 * torch.rand(batch, 1, 2, 3, generator=generator)  # far from the box
    y = torch.randint(0, 3, (batch,), generator=generator)
    return x, y, torch.arange(batch)


def test_envelope_input_is_x_adv_exactly_and_its_eps_gradient_is_the_active_set_l1_norm():
    model = LinearClassifier(6, 2, seed=1)
    x, _, _ = _batch(4)
    y = torch.zeros(4, dtype=torch.long)
    eps = torch.tensor([0.01, 0.02, 0.03, 0.0], requires_grad=True)
    direction = (model.fc.weight[1] - model.fc.weight[0]).sign().view(1, 1, 2, 3).detach()
    x_adv = x + eps.detach().view(-1, 1, 1, 1) * direction  # the maximiser, every pixel active
    x_in = envelope_input(x, x_adv, eps)
    assert torch.equal(x_in, x_adv)
    loss = F.cross_entropy(model(x_in), y, reduction="sum")
    (d_eps,) = torch.autograd.grad(loss, eps)

    def value(e: torch.Tensor) -> torch.Tensor:  # V(eps) = max loss in the ball, closed form
        return F.cross_entropy(model(x + e.view(-1, 1, 1, 1) * direction), y, reduction="none")

    h = 1e-3
    finite_difference = (value(eps.detach() + h) - value(eps.detach() - h)) / (2 * h)
    torch.testing.assert_close(d_eps[:3], finite_difference[:3].detach(), rtol=1e-3, atol=1e-4)
    assert d_eps[3] == 0  # a zero budget has no active constraint


def test_envelope_gradient_scales_the_perturbation_and_ignores_pixels_held_by_the_box():
    x = torch.tensor([[[[0.05, 0.5, 0.5]]]])
    x_adv = torch.tensor([[[[0.0, 0.6, 0.55]]]])  # held by the 0 bound, at +eps, inside the ball
    eps = torch.tensor([0.1], requires_grad=True)
    x_in = envelope_input(x, x_adv, eps)
    (grad,) = torch.autograd.grad((x_in * torch.tensor([5.0, 1.0, 1.0])).sum(), eps)
    torch.testing.assert_close(grad, torch.tensor([1.0 + 0.5]))


def test_pgd_at_trains_every_sample_at_the_same_budget():
    defense = build_defense(_config("pgd-at"))
    model = LinearClassifier(6, 3)
    out = defense.step(model, *_batch())
    torch.testing.assert_close(out.budget.eps, torch.full((16,), 8 / 255))
    assert out.logits_clean is not None and out.logits_adv.shape == (16, 3)
    assert list(defense.parameters()) == []


def test_static_des_budgets_follow_the_cues_within_range():
    defense = build_defense(_config("static-des"))
    out = defense.step(LinearClassifier(6, 3), *_batch())
    eps = out.budget.eps
    assert (eps >= 4 / 255 - 1e-7).all() and (eps <= 12 / 255 + 1e-7).all()
    assert eps.std() > 0, "cues differ between samples, so budgets must too"


def test_ades_gives_the_model_the_same_gradient_as_plain_adversarial_training():
    torch.manual_seed(0)
    defense = build_defense(_config("ades", cues={"names": "grad,entropy", "point": "clean"}))
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    out = defense.step(model, x, y, idx)
    out.loss.backward()
    ades_grad = model.fc.weight.grad.clone()
    scheduler_grads = [p.grad for p in defense.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in scheduler_grads)
    assert any(g.abs().sum() > 0 for g in scheduler_grads)

    model.zero_grad()
    x_adv = defense.attack(model, x, y, out.budget.eps)
    F.cross_entropy(model(x_adv), y).backward()
    torch.testing.assert_close(model.fc.weight.grad, ades_grad)


def _mean_eps_after_one_scheduler_step(objective: str) -> tuple[float, float]:
    torch.manual_seed(0)
    defense = build_defense(_config("ades", scheduler={"objective": objective}))
    model = LinearClassifier(6, 3)
    x, y, idx = _batch(64)
    before = defense.step(model, x, y, idx)
    before.loss.backward()
    optimiser = torch.optim.SGD(defense.parameters(), lr=50.0)
    optimiser.step()
    after = defense.step(model, x, y, idx)
    return float(before.budget.eps.mean()), float(after.budget.eps.mean())


def test_paper_objective_shrinks_budgets_as_the_envelope_theorem_predicts():
    # dL/d eps >= 0 (a larger ball never lowers the max loss), so descending L lowers eps.
    before, after = _mean_eps_after_one_scheduler_step("paper")
    assert after < before


def test_allocating_objectives_hold_the_mean_budget():
    for objective in ("allocate-max", "allocate-min"):
        before, after = _mean_eps_after_one_scheduler_step(objective)
        assert abs(before - 8 / 255) < 1e-6 and abs(after - 8 / 255) < 1e-6


def test_defenses_keep_the_model_in_train_mode_and_satisfy_the_protocol():
    for name in ("pgd-at", "static-des", "ades"):
        defense = build_defense(_config(name))
        assert isinstance(defense, Defense)
        model = LinearClassifier(6, 3).train()
        defense.step(model, *_batch())
        assert model.training


def test_ades_with_a_fixed_scheduler_is_refused():
    import pytest

    from ades_core.config import ConfigError

    with pytest.raises(ConfigError, match="needs a learnable scheduler, got 'static'; learnable: mlp"):
        _config("ades", scheduler={"name": "static"})  # refused when the config is built
