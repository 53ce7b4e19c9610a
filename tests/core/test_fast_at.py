"""Fast-AT: one FGSM step of 1.25 eps from a uniform start in the ball, one gradient per attack."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ades_core import RunConfig, build_defense
from ades_core.attacks import PGD
from ades_core.config import ConfigError
from tests.tiny_models import LinearClassifier, record_attack

EPS = 8 / 255


def _config(**options) -> RunConfig:
    return RunConfig.from_dict(
        {
            "defense": "fast-at",
            "budget": {"eps": "8/255"},
            "attack": {"steps": 10, "alpha": "2/255"},  # not used by fast-at
            "defense_options": options,
        }
    )


def _batch(batch: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 2, 3, generator=generator)
    x[:4] = 0.0  # at the box's edges: the projection must hold them
    x[4:8] = 1.0
    y = torch.randint(0, 3, (batch,), generator=generator)
    return x, y, torch.arange(batch)


def test_fast_at_attack_is_one_step_of_one_and_a_quarter_eps_from_a_uniform_start():
    attack = build_defense(_config()).attack
    assert isinstance(attack, PGD)
    assert attack.steps == 1 and attack.random_start and attack.start_noise == "uniform"
    assert attack.alpha == pytest.approx(1.25 * EPS)
    assert build_defense(_config(fast_alpha_ratio=1.0)).attack.alpha == pytest.approx(EPS)


def test_fast_at_takes_exactly_one_input_gradient_per_step(monkeypatch):
    defense = build_defense(_config())
    model = LinearClassifier(6, 3)
    forwards = {"with_grad": 0, "no_grad": 0}

    def count_forward(module, inputs, output):
        forwards["with_grad" if torch.is_grad_enabled() else "no_grad"] += 1

    model.register_forward_hook(count_forward)
    input_gradients = []
    real_grad = torch.autograd.grad

    def counting_grad(outputs, inputs, *args, **kwargs):
        input_gradients.append(1)
        return real_grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    out = defense.step(model, *_batch())
    out.loss.backward()
    assert len(input_gradients) == 1  # the FGSM step
    assert forwards == {"with_grad": 2, "no_grad": 1}  # attack, training; clean logits for the metric


def test_fast_at_x_adv_is_the_projected_fgsm_step_from_the_uniform_start_inside_the_ball_and_box():
    defense = build_defense(_config())
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    adversarial = record_attack(defense)
    torch.manual_seed(3)
    defense.step(model, x, y, idx)
    x_adv = adversarial[0]
    assert ((x_adv - x).abs() <= EPS + 1e-6).all() and ((x_adv >= 0) & (x_adv <= 1)).all()

    torch.manual_seed(3)  # the same start, by hand: x + eps * U[-1, 1], clipped to the box
    start = (x + (torch.rand_like(x) * 2 - 1) * EPS).clamp(0, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(start), y, reduction="sum"), start)
    stepped = start.detach() + 1.25 * EPS * grad.sign()
    expected = torch.minimum(torch.maximum(stepped, (x - EPS).clamp(min=0)), (x + EPS).clamp(max=1))
    torch.testing.assert_close(x_adv, expected)


def test_fast_at_trains_on_cross_entropy_at_its_adversarial_examples():
    defense = build_defense(_config())
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    adversarial = record_attack(defense)
    out = defense.step(model, x, y, idx)
    with torch.no_grad():
        torch.testing.assert_close(out.loss, F.cross_entropy(model(adversarial[0]), y))
    torch.testing.assert_close(out.budget.eps, torch.full((16,), EPS))


def test_fast_at_refuses_a_zero_budget_and_a_non_positive_step_ratio():
    with pytest.raises(ConfigError, match="budget.eps: fast-at needs a positive eps"):
        build_defense(RunConfig.from_dict({"defense": "fast-at", "budget": {"eps": 0}}))
    with pytest.raises(ConfigError, match="fast_alpha_ratio"):
        _config(fast_alpha_ratio=0.0)
