"""Every evaluation attack stays in its budget and in [0, 1], restores modes, leaves the model alone."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ades_core.attacks import (
    FGSM,
    AutoAttack,
    MissingDependencyError,
    Square,
    TorchattacksAutoAttack,
    torchattacks_available,
)
from ades_core.attacks import autoattack as autoattack_module
from ades_core.attacks import torchattacks_autoattack as torchattacks_module
from ades_core.evaluation import resolve_attack
from ades_core.registry import RegistryError
from tests.evaluation.models import PooledNet
from tests.strategies import image_batches

needs_torchattacks = pytest.mark.skipif(
    not torchattacks_available(), reason="needs torchattacks: pip install --no-deps torchattacks==3.5.1"
)

CHEAP = {
    "pgd20": lambda: resolve_attack("pgd20").build(),
    "cw": lambda: resolve_attack("cw").build(),
    "fgsm": lambda: resolve_attack("fgsm").build(),
    "square": lambda: Square(n_queries=15),
    "autoattack": lambda: AutoAttack(iterations=2, square_queries=15),
    "autoattack-rand": lambda: AutoAttack(version="rand", iterations=2),
    "autoattack-torchattacks": lambda: TorchattacksAutoAttack(iterations=2, square_queries=15),
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
    "name", [pytest.param(n, marks=needs_torchattacks) if n.endswith("torchattacks") else n for n in sorted(CHEAP)]
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


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: AutoAttack(iterations=2, square_queries=10, seed=7), id="official"),
        pytest.param(
            lambda: TorchattacksAutoAttack(iterations=2, square_queries=10, seed=7), id="torchattacks",
            marks=needs_torchattacks,
        ),
    ],
)
def test_autoattack_leaves_an_eval_model_in_eval_mode_and_the_random_stream_alone(make):
    model = PooledNet().eval()
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(dim=1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make()(model, x, y, 8 / 255)
    assert not any(m.training for m in model.modules())
    torch.testing.assert_close(torch.rand(3), expected)  # the components' manual_seed did not leak


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: AutoAttack(iterations=3, square_queries=20, seed=5), id="official"),
        pytest.param(lambda: Square(n_queries=20, seed=5), id="square"),
        pytest.param(
            lambda: TorchattacksAutoAttack(iterations=3, square_queries=20, seed=5), id="torchattacks",
            marks=needs_torchattacks,
        ),
    ],
)
def test_autoattack_is_deterministic_for_its_seed(make):
    model = PooledNet().eval()
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(dim=1)
    attack = make()
    torch.testing.assert_close(attack(model, x, y, 16 / 255), attack(model, x, y, 16 / 255), rtol=0, atol=0)


@pytest.mark.parametrize(
    "make", [pytest.param(AutoAttack, id="official"), pytest.param(TorchattacksAutoAttack, marks=needs_torchattacks)]
)
def test_autoattack_needs_four_classes(make):
    model = PooledNet(num_classes=3).eval()
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="at least 4 classes"):
        make()(model, x, model(x).argmax(dim=1), 8 / 255)


def test_the_official_autoattack_reports_the_authors_settings_and_its_own_flags():
    model = PooledNet(num_classes=10).eval()
    x = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    attack = AutoAttack(seed=0)
    before = attack.settings()
    assert before["implementation"] == f"pyautoattack=={autoattack_module.pyautoattack_version()}"
    assert (before["iterations"], before["square_queries"], before["target_classes"]) == (100, 5000, 9)
    assert before["components"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and before["standard"]
    cheap = AutoAttack(iterations=2, square_queries=5, seed=0)
    cheap(model, x, model(x).argmax(dim=1), 8 / 255)
    settings = cheap.settings()
    assert not settings["standard"] and settings["iterations"] == 2
    assert isinstance(settings["official_flags"], list)


def test_missing_pyautoattack_says_how_to_install(monkeypatch):
    def missing():
        raise MissingDependencyError("the official AutoAttack needs pyautoattack: pip install pyautoattack==0.2.0")

    monkeypatch.setattr(autoattack_module, "_pyautoattack", missing)
    with pytest.raises(MissingDependencyError, match=r"pip install pyautoattack==0\.2\.0"):
        AutoAttack()


def test_missing_torchattacks_says_how_to_install(monkeypatch):
    monkeypatch.setattr(torchattacks_module, "torchattacks_available", lambda: False)
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps torchattacks==3\.5\.1"):
        TorchattacksAutoAttack()


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
    for name in ("autoattack", "autoattack-rand", "autoattack-torchattacks", "cw", "fgsm", "pgd20", "square", "pgdN"):
        assert name in message
    for name in ("autoattack", "autoattack-plus", "autoattack-torchattacks", "square"):
        assert not resolve_attack(name).white_box  # they hold Square, which uses no gradient
    assert resolve_attack("autoattack-rand").white_box  # APGD-CE and APGD-DLR only
