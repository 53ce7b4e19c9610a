"""PGD-20, CW and both AutoAttack wrappers agree with the exact answer on a linear classifier.

For ``logits = W x + b`` with inputs far enough from 0 and 1 that the box does
not bind, a sample is robust at eps exactly when
``min_{j != y} (z_y - z_j - eps * ||w_y - w_j||_1) > 0``.
"""

from __future__ import annotations

import pytest
import torch

from ades_core.attacks import AutoAttack, TorchattacksAutoAttack, torchattacks_available
from ades_core.evaluation import attack_outcome, clean_correct, resolve_attack, select
from tests.evaluation.models import Linear, linear_data

EPS = 8 / 255
SHAPE = (3, 4, 4)
MARGIN = 0.3  # keep samples whose exact margin is at least this far from 0 (in logits)


@pytest.fixture(scope="module")
def problem():
    model = Linear(48, 5, seed=3).eval()
    data = linear_data(model, 96, SHAPE, seed=4)  # pixels in [96, 160] / 255: eps never reaches the box
    x = data.images.float() / 255
    margin = model.exact_margin(x, data.labels, EPS)
    keep = (margin.abs() > MARGIN).nonzero().squeeze(1)
    data = select(data, keep)
    robust = margin[keep] > 0
    assert 5 <= int(robust.sum()) <= len(keep) - 5, "the problem needs both robust and non-robust samples"
    return model, data, robust


def _outcome(model, data, attack):
    clean = clean_correct(model, data, batch_size=64, device=torch.device("cpu"))
    assert clean.all()  # labels are the model's own predictions
    return attack_outcome(model, data, attack, EPS, clean=clean, batch_size=64, device=torch.device("cpu"), seed=0)


@pytest.mark.parametrize("name", ["pgd20", "cw"])
def test_pgd_finds_exactly_the_non_robust_samples(problem, name):
    model, data, robust = problem
    outcome = _outcome(model, data, resolve_attack(name).build())
    assert torch.equal(outcome.correct, robust)


@pytest.mark.slow
def test_the_official_autoattack_finds_exactly_the_non_robust_samples(problem):
    model, data, robust = problem
    attack = AutoAttack()  # the authors' standard version: 100 iterations, 5000 queries
    outcome = _outcome(model, data, attack)
    assert torch.equal(outcome.correct, robust)
    settings = attack.settings()
    assert settings["implementation"].startswith("pyautoattack==")
    assert settings["target_classes"] == 4  # 5 classes: every other class is a target
    assert not settings["standard"]  # fewer than 10 classes: not the leaderboard setting


@pytest.mark.slow
@pytest.mark.skipif(not torchattacks_available(), reason="needs torchattacks: pip install --no-deps torchattacks==3.5.1")
def test_torchattacks_autoattack_finds_exactly_the_non_robust_samples(problem):
    model, data, robust = problem
    outcome = _outcome(model, data, TorchattacksAutoAttack())  # 100 iterations, 5000 queries
    assert torch.equal(outcome.correct, robust)


def test_the_box_does_not_bind(problem):
    _, data, _ = problem
    x = data.images.float() / 255
    assert (x - EPS >= 0).all() and (x + EPS <= 1).all()
