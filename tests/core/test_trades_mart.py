"""TRADES and MART, alone and with per-sample budgets (``--loss``), and the PGD pieces they need."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from ades_cli.main import cli
from ades_core import RunConfig, build_defense
from ades_core.attacks import PGD
from ades_core.attacks.losses import kl_to_target
from ades_core.config import TRAINING_LOSSES, ConfigError
from ades_core.defenses.losses import TRAINING_LOSS_SPECS, boosted_cross_entropy, mart_loss, trades_loss
from tests.cli.tiny_runs import GOOD, TINY_RUN, write_images
from tests.tiny_models import LinearClassifier

ROUNDING = 1e-6  # float32 rounding of x +- eps


def _config(defense: str, **sections) -> RunConfig:
    raw = {
        "defense": defense,
        "cues": {"names": "grad,entropy"},
        "attack": {"steps": 3, "alpha": "2/255"},
        "budget": {"eps": "8/255", "eps_min": "4/255", "lam": "8/255"},
    }
    raw.update(sections)
    return RunConfig.from_dict(raw)


def _batch(batch: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = 0.25 + 0.5 * torch.rand(batch, 1, 2, 3, generator=generator)
    y = torch.randint(0, 3, (batch,), generator=generator)
    return x, y, torch.arange(batch)


def _record_attack(defense) -> list[dict]:
    """Wrap ``defense.attack`` so each call's target, budgets and ``x_adv`` are kept."""
    calls: list[dict] = []
    attack = defense.attack

    def spy(model, x, target, eps, **kwargs):
        x_adv = attack(model, x, target, eps, **kwargs)
        calls.append({"target": target, "eps": eps, "x_adv": x_adv})
        return x_adv

    defense.attack = spy
    return calls


def _within_balls(x: torch.Tensor, x_adv: torch.Tensor, eps: torch.Tensor) -> bool:
    radius = eps.view(-1, *([1] * (x.ndim - 1)))
    return bool(((x_adv - x).abs() <= radius + ROUNDING).all() and ((x_adv >= 0) & (x_adv <= 1)).all())


# ------------------------------------------------------------------ TRADES


def test_trades_with_beta_zero_is_exactly_clean_cross_entropy_training():
    defense = build_defense(_config("trades", defense_options={"beta": 0.0}))
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    out = defense.step(model, x, y, idx)
    out.loss.backward()
    trades_grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    clean = F.cross_entropy(model(x), y)
    clean.backward()
    torch.testing.assert_close(out.loss.detach(), clean.detach())  # equal up to float32 rounding
    for got, want in zip(trades_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want)


def test_trades_loss_is_clean_ce_plus_beta_times_batchmean_kl_to_the_adversarial_prediction():
    defense = build_defense(_config("trades", defense_options={"beta": 3.0}))
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    calls = _record_attack(defense)
    out = defense.step(model, x, y, idx)
    x_adv = calls[0]["x_adv"]
    with torch.no_grad():
        clean_probs = F.softmax(model(x), dim=1)
        expected = F.cross_entropy(model(x), y) + 3.0 * F.kl_div(
            F.log_softmax(model(x_adv), dim=1), clean_probs, reduction="batchmean"
        )
    torch.testing.assert_close(out.loss.detach(), expected)
    torch.testing.assert_close(calls[0]["target"], clean_probs)  # the inner attack's KL target: p(x)
    torch.testing.assert_close(out.budget.eps, torch.full((16,), 8 / 255))


def test_trades_inner_attack_starts_at_a_tiny_gaussian_increases_the_kl_and_stays_in_each_ball():
    defense = build_defense(_config("trades", attack={"steps": 5, "alpha": "2/255"}))
    attack = defense.attack
    assert attack.loss_fn is kl_to_target and attack.start_noise == "normal" and attack.normal_std == 1e-3
    model = LinearClassifier(6, 3)
    x, _, _ = _batch()
    eps = torch.linspace(1 / 255, 12 / 255, 16)
    with torch.no_grad():
        clean_probs = F.softmax(model(x), dim=1)
    torch.manual_seed(1)
    start = attack.draw_start(x, eps.view(-1, 1, 1, 1))
    torch.manual_seed(1)
    x_adv = attack(model, x, clean_probs, eps)
    with torch.no_grad():
        kl_start = kl_to_target(model(start), clean_probs)
        kl_adv = kl_to_target(model(x_adv), clean_probs)
    assert (start - x).abs().max() < 0.01  # x + 0.001 * N(0, 1), not a uniform point in the ball
    assert (kl_adv > kl_start).all()
    assert kl_adv.mean() > 100 * kl_start.mean()
    assert _within_balls(x, x_adv, eps)


def test_mart_inner_attack_is_pgd_on_cross_entropy_from_the_same_tiny_gaussian_start():
    attack = build_defense(_config("mart")).attack
    assert isinstance(attack, PGD)
    assert attack.loss_name == "ce" and attack.start_noise == "normal" and attack.steps == 3


# ------------------------------------------------------------------ MART


def test_mart_loss_matches_the_papers_formula_on_fixed_logits():
    logits_adv = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 0.0], [-1.0, 0.0, 4.0], [0.0, 0.0, 0.0]])
    logits_nat = torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, -2.0], [0.0, 2.0, 1.0], [1.0, -1.0, 0.5]])
    y = torch.tensor([0, 0, 1, 2])
    beta = 5.0
    p_adv, p_nat = F.softmax(logits_adv, dim=1).tolist(), F.softmax(logits_nat, dim=1).tolist()
    hand = []
    for i, label in enumerate(y.tolist()):
        runner_up = max((k for k in range(3) if k != label), key=lambda k: p_adv[i][k])
        bce = -math.log(p_adv[i][label]) - math.log(1 - p_adv[i][runner_up])
        kl = sum(p * math.log(p / q) for p, q in zip(p_nat[i], p_adv[i]))
        hand.append(bce + beta * kl * (1 - p_nat[i][label]))
    torch.testing.assert_close(mart_loss(logits_adv, y, logits_nat, beta), torch.tensor(hand))
    torch.testing.assert_close(boosted_cross_entropy(logits_adv, y), mart_loss(logits_adv, y, logits_nat, 0.0))


def test_mart_boosted_ce_stays_finite_when_a_wrong_class_takes_all_the_probability():
    logits = torch.tensor([[0.0, 80.0, -5.0]], requires_grad=True)
    loss = boosted_cross_entropy(logits, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()


def test_mart_defense_trains_on_the_mart_loss_of_its_adversarial_examples():
    defense = build_defense(_config("mart", defense_options={"beta": 6.0}))
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    calls = _record_attack(defense)
    out = defense.step(model, x, y, idx)
    with torch.no_grad():
        expected = mart_loss(model(calls[0]["x_adv"]), y, model(x), 6.0).mean()
    torch.testing.assert_close(out.loss.detach(), expected)
    assert torch.equal(calls[0]["target"], y)  # MART's inner attack maximises CE on the labels


def test_every_configurable_loss_has_a_specification():
    assert set(TRAINING_LOSS_SPECS) == set(TRAINING_LOSSES)
    assert TRAINING_LOSS_SPECS["trades"].per_sample is trades_loss


# ------------------------------------------------------------------ per-sample budgets


@pytest.mark.parametrize("loss", ["trades", "mart"])
def test_per_sample_budgets_with_trades_or_mart_keep_each_x_adv_in_its_own_ball(loss):
    torch.manual_seed(0)
    defense = build_defense(_config("ades", defense_options={"loss": loss}))
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    calls = _record_attack(defense)
    out = defense.step(model, x, y, idx)
    eps = calls[0]["eps"]
    assert eps.std() > 0, "the cues differ between samples, so must the budgets"
    assert _within_balls(x, calls[0]["x_adv"], eps)
    torch.testing.assert_close(out.budget.eps, eps)


def test_ades_with_trades_gives_the_model_the_trades_gradient_and_the_scheduler_its_own():
    torch.manual_seed(0)
    config = _config("ades", cues={"names": "grad,entropy", "point": "clean"}, defense_options={"loss": "trades"})
    defense = build_defense(config)
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    calls = _record_attack(defense)
    out = defense.step(model, x, y, idx)
    out.loss.backward()
    ades_grads = [p.grad.clone() for p in model.parameters()]
    scheduler_grads = [p.grad for p in defense.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in scheduler_grads)
    assert any(g.abs().sum() > 0 for g in scheduler_grads)

    model.zero_grad()
    x_adv = calls[0]["x_adv"]
    beta = config.defense_options.beta
    loss = F.cross_entropy(model(x), y) + beta * F.kl_div(
        F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1), reduction="batchmean"
    )
    loss.backward()
    for got, want in zip(ades_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want)


def test_the_scheduler_gradient_flows_only_through_the_robust_term():
    # with beta = 0 the TRADES loss does not depend on x_adv, so dL/d eps = 0 for every sample
    config = _config("ades", cues={"names": "grad,entropy", "point": "clean"}, scheduler={"objective": "paper"})
    defense = build_defense(config.evolve(defense_options={"loss": "trades", "beta": 0.0}))
    out = defense.step(LinearClassifier(6, 3), *_batch())
    out.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in defense.parameters())


# ------------------------------------------------------------------ refusals


def test_a_loss_is_refused_where_the_defense_has_its_own_or_takes_none():
    with pytest.raises(ConfigError, match="loss 'mart' does not apply to defense 'trades'"):
        build_defense(_config("trades", defense_options={"loss": "mart"}))
    with pytest.raises(ConfigError, match="defense 'fast-at'; it applies to: ades, pgd-at, static-des"):
        build_defense(_config("fast-at", defense_options={"loss": "trades"}))
    build_defense(_config("trades", defense_options={"loss": "trades"}))  # its own loss: fine


def test_trades_refuses_an_attack_loss_its_kl_inner_maximisation_would_ignore():
    with pytest.raises(ConfigError, match="attack.loss: .*KL"):
        build_defense(_config("trades", attack={"steps": 2, "loss": "cw"}))


# ------------------------------------------------------------------ PGD's new pieces


def test_kl_to_target_is_zero_at_the_target_and_positive_elsewhere():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    target = F.softmax(logits, dim=1)
    torch.testing.assert_close(kl_to_target(logits, target), torch.zeros(2), rtol=0, atol=1e-6)
    assert kl_to_target(logits[:1].flip(1), target[:1]) > 0


def test_pgd_normal_start_has_the_asked_spread_and_stays_in_the_box():
    attack = PGD(steps=1, alpha=0.01, start_noise="normal", normal_std=1e-3)
    x = torch.full((4, 3, 32, 32), 0.5)
    x[0] = 0.0
    start = attack.draw_start(x, 0.5)
    spread = (start[1:] - x[1:]).std()
    assert 0.9e-3 < spread < 1.1e-3
    assert (start >= 0).all() and (start <= 1).all()


def test_pgd_replace_changes_only_the_named_settings_and_refuses_unknown_ones():
    attack = PGD(steps=4, alpha=0.01, random_start=False, loss="cw")
    copy = attack.replace(start_noise="normal")
    assert (copy.steps, copy.alpha, copy.random_start, copy.loss_name) == (4, 0.01, False, "cw")
    assert copy.start_noise == "normal" and attack.start_noise == "uniform"
    with pytest.raises(TypeError, match="no setting"):
        attack.replace(momentum=0.9)
    with pytest.raises(ValueError, match="start_noise"):
        PGD(steps=1, alpha=0.1, start_noise="laplace")


# ------------------------------------------------------------------ CLI


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--defense", "trades", "--beta", "3"], {"loss": "ce", "beta": 3.0}),
        (
            ["--defense", "ades", "--loss", "trades", "--cue", "entropy", "--awp", "--awp-gamma", "0.01"],
            {"loss": "trades", "beta": 6.0, "awp": True, "awp_gamma": 0.01},
        ),
    ],
)
def test_the_cli_trains_with_trades_and_awp_and_records_their_options(tmp_path, args, expected):
    data = write_images(tmp_path / "data", GOOD)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", *TINY_RUN, "--data-dir", str(data), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    options = json.loads((out / "config.json").read_text())["defense_options"]
    assert {k: options[k] for k in expected} == expected
