"""Evaluation PGD counts a sample as broken if any iterate broke it, not only the last one."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ades_core.attacks import PGD
from ades_core.evaluation.specs import resolve_attack
from tests.tiny_models import LinearClassifier

ALPHA = 0.03
EPS = 0.1  # the ball [0.365, 0.565] around 0.465 never binds


class Notch(nn.Module):
    """One pixel ``t``; class 0 wins by ``10 |t - 0.5| - 0.1``: wrong only for ``|t - 0.5| < 0.01``.

    The cross-entropy of class 0 rises towards ``t = 0.5``, so sign steps of
    0.03 from 0.465 oscillate around the notch: 0.495 (wrong), 0.525 (right),
    0.495 (wrong), ... An even number of steps ends right, an odd number wrong.
    """

    def forward(self, x: Tensor) -> Tensor:
        t = x.flatten(1)[:, 0]
        margin = 10 * (t - 0.5).abs() - 0.1
        return torch.stack([margin, torch.zeros_like(margin)], dim=1)


def _attack(steps: int, **options) -> Tensor:
    x = torch.full((1, 1, 1, 1), 0.465)
    y = torch.zeros(1, dtype=torch.long)
    return PGD(steps=steps, alpha=ALPHA, random_start=False, **options)(Notch(), x, y, EPS)


def _predicted(x_adv: Tensor) -> int:
    return int(Notch()(x_adv).argmax(dim=1))


@pytest.mark.parametrize("steps", [2, 20])
def test_without_keep_broken_pgd_returns_its_last_iterate_which_the_model_gets_right(steps):
    x_adv = _attack(steps)
    assert x_adv.item() == pytest.approx(0.525)
    assert _predicted(x_adv) == 0


@pytest.mark.parametrize("steps", [2, 20, 21])
def test_with_keep_broken_a_sample_broken_by_an_earlier_iterate_stays_broken(steps):
    x_adv = _attack(steps, keep_broken=True)
    assert x_adv.item() == pytest.approx(0.495)
    assert _predicted(x_adv) == 1


class Tie(nn.Module):
    """One pixel ``t``: logits ``(100 (t - 0.5), 0)``, a tie at ``t = 0.5``, class 0 wins above it."""

    def forward(self, x: Tensor) -> Tensor:
        t = x.flatten(1)[:, 0]
        return torch.stack([100 * (t - 0.5), torch.zeros_like(t)], dim=1)


def _class_0_score(logits: Tensor, y: Tensor) -> Tensor:
    return logits[:, 0]  # maximising it moves t up, away from the tie, to class 0


def test_a_tie_counts_as_broken():
    x = torch.full((1, 1, 1, 1), 0.5)
    y = torch.zeros(1, dtype=torch.long)
    # From the tie, an attack that climbs towards class 0 ends right; the tie at its start is kept.
    plain = PGD(steps=1, alpha=ALPHA, random_start=False, loss=_class_0_score)(Tie(), x, y, EPS)
    kept = PGD(steps=1, alpha=ALPHA, random_start=False, loss=_class_0_score, keep_broken=True)(Tie(), x, y, EPS)
    assert plain.item() == pytest.approx(0.53)
    assert kept.item() == 0.5


def test_the_last_iterate_is_checked_too_and_the_most_misclassified_iterate_wins():
    # Cross-entropy steps down from the tie: the last iterate (0.47) is misclassified by a
    # margin of 3, the start only by a tie; the last iterate is kept, not the first broken one.
    x = torch.full((1, 1, 1, 1), 0.5)
    y = torch.zeros(1, dtype=torch.long)
    kept = PGD(steps=1, alpha=ALPHA, random_start=False, keep_broken=True)(Tie(), x, y, EPS)
    assert kept.item() == pytest.approx(0.47)


def test_a_sample_never_broken_gets_the_last_iterate_bit_for_bit():
    model = LinearClassifier(12, 3, seed=1)
    x = torch.rand(6, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(dim=1)
    torch.manual_seed(3)
    plain = PGD(steps=5, alpha=1e-4)(model, x, y, 1e-3)
    torch.manual_seed(3)
    kept = PGD(steps=5, alpha=1e-4, keep_broken=True)(model, x, y, 1e-3)
    assert (model(plain).argmax(dim=1) == y).all()  # a budget too small to break any sample
    assert torch.equal(plain, kept)


def test_keep_broken_needs_labels():
    model = LinearClassifier(12, 3)
    x = torch.rand(4, 3, 2, 2)
    probabilities = torch.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="labels"):
        PGD(steps=1, alpha=0.01, keep_broken=True)(model, x, probabilities, 0.1)


def test_keep_broken_is_off_for_training_and_on_for_every_evaluation_pgd():
    assert not PGD(steps=1, alpha=0.01).keep_broken
    assert PGD(steps=1, alpha=0.01).replace(keep_broken=True).keep_broken
    for name in ("pgd20", "pgd100", "cw", "cw50"):
        spec = resolve_attack(name)
        attack = spec.build()
        assert attack.keep_broken, name
        assert spec.settings(attack)["keep_broken"] is True, name
