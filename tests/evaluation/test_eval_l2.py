"""Evaluation in L2: attacks resolved in the norm, every returned image checked in its L2 ball,
the official AutoAttack's L2 version, the masking checks' L2 budgets, and the norm in every report.

L2 budgets are Euclidean radii in pixel space (RobustBench's CIFAR-10 L2 leaderboard: 0.5).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ades_core.attacks import AutoAttack, Square
from ades_core.evaluation import evaluate, resolve_attacks
from ades_core.evaluation.masking import MaskingCheckConfig
from ades_core.evaluation.robustbench import ExportError, threat_model
from ades_core.evaluation.runner import AttackContractError, attack_outcome
from ades_core.evaluation.specs import resolve_attack
from tests.evaluation.models import Linear, PooledNet, linear_data
from tests.strategies import seeds


def test_names_resolve_in_l2_with_the_relative_step():
    pgd, cw = resolve_attacks(["pgd20", "cw"], "l2")
    assert pgd.options.norm == cw.options.norm == "l2" and pgd.options.alpha is None
    assert cw.options.loss == "cw"
    assert pgd.settings()["alpha_text"] == "2.5 * eps / 20" and pgd.settings()["norm"] == "l2"
    assert resolve_attack("autoattack", "l2").build().norm.official == "L2"


def test_an_attack_without_l2_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"attack 'autoattack-torchattacks' supports norm\(s\) linf, not l2; "):
        resolve_attack("autoattack-torchattacks", "l2")


def test_an_evaluation_refuses_attacks_resolved_in_another_norm():
    model = Linear(12, 3)
    with pytest.raises(ValueError, match="another norm than the evaluation's l2"):
        evaluate(model, linear_data(model, 4, (3, 2, 2)), resolve_attacks(["pgd20"]), 0.5,
                 device=torch.device("cpu"), checks=None, norm="l2")


class SignStep:
    """A cheating "L2" attack: a sign step of size eps, far outside the L2 ball of eps."""

    def __call__(self, model, x, y, eps):
        return (x + eps * torch.ones_like(x)).clamp(0, 1)


def test_an_attack_leaving_its_l2_ball_is_refused_rather_than_scored():
    model = Linear(12, 3)
    data = linear_data(model, 6, (3, 2, 2))
    clean = torch.ones(6, dtype=torch.bool)
    with pytest.raises(AttackContractError, match="outside the L2 ball"):
        attack_outcome(model, data, SignStep(), 0.1, clean=clean, batch_size=6, device=torch.device("cpu"),
                       norm="l2")
    # the same images lie inside the L-inf ball of 0.1: the check is the norm's
    attack_outcome(model, data, SignStep(), 0.1, clean=clean, batch_size=6, device=torch.device("cpu"))


@settings(max_examples=6, deadline=None)
@given(seed=seeds, side=st.integers(5, 8), eps=st.floats(0.05, 2.0))  # L2 Square needs sides >= 5
def test_the_official_l2_autoattack_and_square_stay_in_the_ball_and_the_box(seed, side, eps):
    model = PooledNet(seed=seed % 100)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 3, side, side, generator=generator)
    y = torch.randint(0, 5, (3,), generator=generator)
    budgets = torch.tensor([eps, eps / 2, eps])
    for attack in (AutoAttack(norm="l2", iterations=2, square_queries=5, seed=0), Square(n_queries=5, norm="l2", seed=0)):
        x_adv = attack(model, x, y, budgets)
        assert (x_adv >= 0).all() and (x_adv <= 1).all()
        assert ((x_adv - x).flatten(1).norm(dim=1) <= budgets + 1e-5).all()
    assert AutoAttack(norm="l2").settings()["norm"] == "L2"


def test_an_l2_evaluation_reports_its_norm_sweep_and_l2_checks():
    torch.manual_seed(0)
    model = Linear(75, 3, seed=2)
    data = linear_data(model, 16, (3, 5, 5))
    result = evaluate(
        model, data, resolve_attacks(["pgd20", "cw", "fgsm"], "l2"), 0.5, device=torch.device("cpu"),
        sweep=[0.25, 0.5, 0.75, 1.0], checks=MaskingCheckConfig(n=8, more_steps=30, square_queries=20), norm="l2",
    )
    report = result.to_dict()
    assert report["norm"] == "l2" and report["eps_text"] == "0.5"
    assert all(row["norm"] == "l2" and row["eps_text"] == "0.5" for row in report["attacks"])
    assert [p["eps_text"] for p in report["sweep"]["points"]] == ["0.25", "0.5", "0.75", "1"]
    robust = [p["robust_acc"] for p in report["sweep"]["points"]]
    assert robust == sorted(robust, reverse=True)
    large = next(c for c in report["checks"] if c["name"] == "large-eps")
    assert large["details"]["eps"] == pytest.approx(64 / 255 * math.sqrt(75)) and large["details"]["norm"] == "l2"
    assert large["status"] == "passed"
    black_box = next(c for c in report["checks"] if c["name"] == "black-box")
    assert black_box["status"] in ("passed", "failed")  # the L2 Square ran


def test_the_l2_square_check_is_not_run_on_images_it_cannot_take():
    model = Linear(12, 3, seed=2)
    result = evaluate(
        model, linear_data(model, 8, (3, 2, 2)), resolve_attacks(["pgd20"], "l2"), 0.5, device=torch.device("cpu"),
        checks=MaskingCheckConfig(n=4, more_steps=25, square_queries=5), norm="l2",
    )
    black_box = next(c for c in result.checks if c.name == "black-box")
    assert black_box.status == "not-run" and "at least 5 x 5 pixels" in black_box.message


def test_l2_pgd_on_a_linear_model_breaks_exactly_the_samples_within_reach():
    # a two-class linear model: sample i is L2-robust at eps iff its margin > eps * ||w_1 - w_0||_2
    model = Linear(12, 2, seed=4)
    data = linear_data(model, 40, (3, 2, 2), low=110, high=145)  # far from the box
    x = data.images.float() / 255
    logits = model(x)
    y = data.labels
    w = model.fc.weight.detach()
    margin = (logits[torch.arange(40), y] - logits[torch.arange(40), 1 - y]).detach()
    eps = 0.05
    exact = margin > eps * (w[1] - w[0]).norm()
    outcome = attack_outcome(
        model, data, resolve_attack("pgd20", "l2").build(), eps, clean=torch.ones(40, dtype=torch.bool),
        batch_size=40, device=torch.device("cpu"), norm="l2",
    )
    assert torch.equal(outcome.correct, exact), "an L2 PGD robust accuracy differing from the exact one"


def test_the_robustbench_export_carries_the_norm_and_refuses_a_mismatch():
    row = {"name": "autoattack", "eps": 0.5, "eps_text": "0.5", "robust_acc": 0.5,
           "settings": {"implementation": "pyautoattack==0.2.0", "standard": True, "version": "standard", "norm": "L2"}}
    assert threat_model({"norm": "l2", "attacks": [row]}) == "L2"
    assert threat_model({"attacks": [row | {"settings": row["settings"] | {"norm": "Linf"}}]}) == "Linf"
    with pytest.raises(ExportError, match="ran in L2, but the evaluation is Linf"):
        threat_model({"norm": "linf", "attacks": [row]})
