"""``attack.random_start=False`` is honoured under the shared cue point.

With the default ``cues.point = start`` the defense draws PGD's start itself
(and evaluates the cues there); it used to draw a random start even when the
attack was configured without one. Without a random start the attack starts
at ``x``: the step is then a deterministic function of the batch.
"""

from __future__ import annotations

import pytest
import torch

from ades_core import RunConfig, build_defense
from tests.tiny_models import LinearClassifier


def _config(defense: str, random_start: bool) -> RunConfig:
    return RunConfig.from_dict(
        {
            "defense": defense,
            "cues": {"names": "grad,entropy"},
            "attack": {"steps": 2, "alpha": "2/255", "random_start": random_start},
            "budget": {"eps": "8/255", "eps_min": "4/255", "lam": "8/255"},
        }
    )


def _batch():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(8, 1, 2, 3, generator=generator), torch.randint(0, 3, (8,), generator=generator), torch.arange(8)


@pytest.mark.parametrize("defense", ["pgd-at", "static-des", "ades", "trades", "mart"])
def test_without_a_random_start_the_step_does_not_depend_on_the_random_state(defense):
    model = LinearClassifier(6, 3, seed=1)
    losses = []
    for seed in (0, 1):
        torch.manual_seed(0)
        step_defense = build_defense(_config(defense, random_start=False))
        torch.manual_seed(seed)
        losses.append(step_defense.step(model, *_batch()).loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)


def test_with_a_random_start_the_step_does_depend_on_it():
    model = LinearClassifier(6, 3, seed=1)
    losses = []
    for seed in (0, 1):
        torch.manual_seed(0)
        defense = build_defense(_config("pgd-at", random_start=True))
        torch.manual_seed(seed)
        losses.append(defense.step(model, *_batch()).loss.detach())
    assert not torch.equal(losses[0], losses[1])
