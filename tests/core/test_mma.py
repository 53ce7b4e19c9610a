"""MMA: each correct sample is trained at its own input-space margin, found by AN-PGD + bisection.

On a two-class linear model the L-inf margin has a closed form,
``|w.x + b| / ||w||_1`` (``w``, ``b``: the difference of the two classes'
weights and biases), so the search can be checked against it.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ades_core import RunConfig, build_defense
from ades_core.config import ConfigError
from ades_core.defenses import mma as mma_module
from ades_core.protocols import Defense
from tests.tiny_models import MARGIN_W, LinearClassifier, images_at_margins, two_class_margin_model

D_MAX = 32 / 255
SEARCH_STEPS = 10
CAP = 1.05 * D_MAX
TOLERANCE = CAP / 2**SEARCH_STEPS


def _defense(num_samples: int = 16, **options):
    config = RunConfig.from_dict(
        {
            "defense": "mma",
            "defense_options": {"mma_max_eps": D_MAX, "mma_search_steps": SEARCH_STEPS, **options},
        }
    )
    return build_defense(config, num_samples=num_samples)


def test_the_budget_of_a_correct_sample_is_its_closed_form_margin_up_to_the_cap():
    margins = [2 / 255, 10 / 255, 25 / 255, 31 / 255, 60 / 255, 120 / 255]
    x = images_at_margins(margins)
    y = torch.zeros(len(margins), dtype=torch.long)
    defense = _defense()
    out = defense.step(two_class_margin_model(), x, y, torch.arange(len(margins)))
    found = out.budget.eps
    for i, margin in enumerate(margins):
        if margin < CAP - TOLERANCE:
            # the smallest flipping point found: never inside the margin, at most one tolerance past it
            assert margin - 1e-5 <= found[i] <= margin + TOLERANCE + 1e-5, (i, margin * 255, found[i] * 255)
        else:
            assert found[i] == pytest.approx(CAP), "no flip up to the cap: the budget is the cap"
    assert out.budget.eps_max == pytest.approx(CAP)


def test_misclassified_samples_get_no_budget_and_the_loss_is_the_papers_mix():
    margins = [5 / 255, 20 / 255, 60 / 255, 10 / 255]
    x = images_at_margins(margins)
    y = torch.tensor([0, 0, 0, 1])  # the last one is misclassified (the model says 0)
    model = two_class_margin_model()
    defense = _defense()
    out = defense.step(model, x, y, torch.arange(4))
    eps = out.budget.eps
    assert eps[3] == 0
    assert eps[2] == pytest.approx(CAP)

    x_adv = x + eps.view(-1, 1, 1, 1) * MARGIN_W.sign().view(1, 1, 2, 3)  # the margin point on the boundary
    with torch.no_grad():
        per_sample = F.cross_entropy(model(x_adv), y, reduction="none")
        clean = F.cross_entropy(model(x), y)
    counted = torch.tensor([1.0, 1.0, 0.0, 1.0])  # sample 2's margin exceeds d_max: the hinge drops it
    expected = clean / 3 + (2 / 3) * (per_sample * counted).sum() / 4
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits_clean, model(x).detach())


def test_found_margins_are_kept_by_dataset_index_and_start_the_next_search(monkeypatch):
    margins = [3 / 255, 12 / 255, 60 / 255]
    x, y = images_at_margins(margins), torch.zeros(3, dtype=torch.long)
    idx = torch.tensor([7, 2, 11])
    defense = _defense(num_samples=16)
    assert torch.equal(defense.margins, torch.zeros(16))
    out = defense.step(two_class_margin_model(), x, y, idx)
    assert torch.equal(defense.margins[idx], out.budget.eps)
    untouched = torch.ones(16, dtype=torch.bool)
    untouched[idx] = False
    assert (defense.margins[untouched] == 0).all()

    radii = []
    real_pgd = mma_module.scaled_step_pgd

    def recording_pgd(model, x, y, eps, *args, **kwargs):
        radii.append(eps)
        return real_pgd(model, x, y, eps, *args, **kwargs)

    monkeypatch.setattr(mma_module, "scaled_step_pgd", recording_pgd)
    defense.step(two_class_margin_model(), x, y, idx)
    torch.testing.assert_close(radii[0], out.budget.eps)  # warm start: the stored margins

    fresh = _defense(num_samples=16)
    fresh.load_state_dict(defense.state_dict())
    assert torch.equal(fresh.margins, defense.margins)


def test_the_first_search_starts_at_min_eps():
    defense = _defense(num_samples=4, mma_min_eps=0.005)
    torch.testing.assert_close(defense.search_start(torch.arange(4)), torch.full((4,), 0.005))


def test_mma_satisfies_the_protocol_and_leaves_the_model_in_train_mode():
    defense = _defense()
    assert isinstance(defense, Defense)
    model = LinearClassifier(6, 3).train()
    x = 0.25 + 0.5 * torch.rand(8, 1, 2, 3)
    out = defense.step(model, x, torch.randint(0, 3, (8,)), torch.arange(8))
    out.loss.backward()
    assert model.training
    assert torch.isfinite(model.fc.weight.grad).all()
    assert list(defense.parameters()) == []


def test_mma_needs_the_training_set_size_and_a_sensible_margin_range():
    with pytest.raises(ValueError, match="num_samples = the training-set size"):
        _defense(num_samples=0)
    with pytest.raises(ConfigError, match=r"mma_min_eps: must lie in \(0, mma_max_eps = 32/255\)"):
        _defense(mma_min_eps="40/255")
    with pytest.raises(ConfigError, match="loss 'trades' does not apply to defense 'mma'"):
        build_defense(
            RunConfig.from_dict({"defense": "mma", "defense_options": {"loss": "trades"}}), num_samples=4
        )
