"""Every evaluation attack stays in its budget and in [0, 1], restores modes, leaves the model alone."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ades_core.attacks import FGSM, AutoAttack, MissingDependencyError, Square, torchattacks_available
from ades_core.attacks import autoattack as autoattack_module
from ades_core.evaluation import resolve_attack
from ades_core.registry import RegistryError
from tests.evaluation.models import PooledNet
from tests.strategies import image_batches

needs_torchattacks = pytest.mark.skipif(
    not torchattacks_available(), reason="needs torchattacks: pip install 'ades[autoattack]'"
)

CHEAP = {
    "pgd20": lambda: resolve_attack("pgd20").build(),
    "cw": lambda: resolve_attack("cw").build(),
    "fgsm": lambda: resolve_attack("fgsm").build(),
    "square": lambda: Square(n_queries=15),
    "autoattack": lambda: AutoAttack(iterations=2, square_queries=15),
}


eval_budgets = st.floats(min_value=0.0, max_value=0.125, allow_nan=False, width=32)
"""L-inf budgets up to about 32/255."""


def _mixed_mode_model() -> PooledNet:
    model = PooledNet()
    model.train()
    model.bn.eval()  # mixed: BN frozen, dropout training
    return model


def _budgets(draw_eps, batch: int):
    return st.one_of(
        draw_eps,
        st.lists(draw_eps, min_size=batch, max_size=batch).map(lambda v: torch.tensor(v, dtype=torch.float32)),
    )


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=needs_torchattacks) if n in ("square", "autoattack") else n for n in sorted(CHEAP)]
)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=image_batches(max_batch=3, max_side=5, channels=st.just(3)), data=st.data())
def test_attack_respects_budget_box_and_model(name, x, data):
    model = _mixed_mode_model()
    eps = data.draw(_budgets(eval_budgets, len(x)))
    with torch.no_grad():
        y = model.eval()(x).argmax(dim=1)  # labels the model gets right, so the attack works
    model.train()
    model.bn.eval()
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}

    x_adv = CHEAP[name]()(model, x, y, eps)

    radius = torch.as_tensor(eps, dtype=torch.float32).expand(len(x)).view(-1, 1, 1, 1)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert ((x_adv - x).abs() <= radius + 1e-6).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    assert {n: m.training for n, m in model.named_modules()} == modes
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


@needs_torchattacks
def test_torchattacks_does_not_leave_an_eval_model_in_train_mode_or_reset_the_random_stream():
    model = PooledNet().eval()
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(dim=1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    AutoAttack(iterations=2, square_queries=10, seed=7)(model, x, y, 8 / 255)
    assert not any(m.training for m in model.modules())
    torch.testing.assert_close(torch.rand(3), expected)  # the components' manual_seed did not leak


@needs_torchattacks
def test_autoattack_is_deterministic_for_its_seed():
    model = PooledNet().eval()
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(dim=1)
    attack = AutoAttack(iterations=3, square_queries=20, seed=5)
    torch.testing.assert_close(attack(model, x, y, 16 / 255), attack(model, x, y, 16 / 255), rtol=0, atol=0)


@needs_torchattacks
def test_autoattack_needs_four_classes():
    model = PooledNet(num_classes=3).eval()
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="at least 4 classes"):
        AutoAttack()(model, x, model(x).argmax(dim=1), 8 / 255)


def test_missing_torchattacks_says_how_to_install(monkeypatch):
    monkeypatch.setattr(autoattack_module, "torchattacks_available", lambda: False)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ades\[autoattack\]'"):
        AutoAttack()


def test_fgsm_moves_every_pixel_to_the_edge_of_the_ball_inside_the_box():
    model = PooledNet().eval()
    x = torch.full((2, 3, 4, 4), 0.5)
    y = torch.tensor([0, 1])
    x_adv = FGSM()(model, x, y, torch.tensor([4 / 255, 8 / 255]))
    moved = (x_adv - x).abs()
    assert torch.allclose(moved[0][moved[0] > 0], torch.tensor(4 / 255), atol=1e-6)
    assert torch.allclose(moved[1][moved[1] > 0], torch.tensor(8 / 255), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "attack", "steps", "loss"),
    [
        ("pgd20", "pgd", 20, "ce"),
        ("pgd100", "pgd", 100, "ce"),
        ("pgd7", "pgd", 7, "ce"),
        ("cw", "pgd", 20, "cw"),
        ("cw30", "pgd", 30, "cw"),
    ],
)
def test_attack_names_resolve_to_pgd_settings(name, attack, steps, loss):
    spec = resolve_attack(name)
    assert (spec.label, spec.attack, spec.options.steps, spec.options.loss) == (name, attack, steps, loss)
    assert spec.options.alpha == pytest.approx(2 / 255) and spec.options.random_start
    assert spec.white_box


def test_unknown_attack_lists_the_known_names():
    with pytest.raises(RegistryError) as info:
        resolve_attack("pgdd")
    message = str(info.value)
    for name in ("autoattack", "cw", "fgsm", "pgd20", "square", "pgdN"):
        assert name in message
    assert not resolve_attack("autoattack").white_box and not resolve_attack("square").white_box
