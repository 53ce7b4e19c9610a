"""The ``lookahead`` objective: budgets scored by the model one virtual step later.

These tests check the virtual step against a hand computation, that the score
reaches the scheduler (and only the scheduler) exactly on the step after a
kept batch, that the model's loss, gradient and BatchNorm statistics are those
of a step without it, and that budgets stay in range with the mean held.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ades_core import RunConfig, build_defense
from ades_core.config import ConfigError, SchedulerOptions
from ades_core.registries import SCHEDULER_OBJECTIVES
from ades_core.schedulers import LookAhead
from ades_core.schedulers.lookahead import LOOKAHEAD_LR, call_with, stepped_parameters
from tests.tiny_models import LinearClassifier

EPS_MIN, LAM = 4 / 255, 8 / 255


def _config(**scheduler) -> RunConfig:
    return RunConfig.from_dict(
        {
            "defense": "ades",
            "cues": {"names": "grad,entropy"},
            "attack": {"steps": 3, "alpha": "2/255"},
            "budget": {"eps_min": "4/255", "lam": "8/255"},
            "scheduler": {"objective": "lookahead", "init_std": 0.5, "lookahead_every": 2, **scheduler},
        }
    )


def _batch(batch: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 2, 3, generator=generator)
    y = torch.randint(0, 3, (batch,), generator=generator)
    return x, y, torch.arange(batch)


def test_lookahead_is_registered_with_its_options():
    assert SCHEDULER_OBJECTIVES.entry("lookahead").info.lr == LOOKAHEAD_LR
    objective = SCHEDULER_OBJECTIVES.build(
        "lookahead", SchedulerOptions(lookahead_every=3, lookahead_lr=0.5), budget=RunConfig().budget
    )
    assert objective == LookAhead(every=3, virtual_lr=0.5) and objective.allocation == "mean"
    assert [objective.keeps(step) for step in range(7)] == [True, False, False, True, False, False, True]
    with pytest.raises(ConfigError, match="lookahead_every"):
        SchedulerOptions(lookahead_every=0)


def test_the_virtual_step_by_hand():
    # loss = s * sum(w) for a 1x2 linear layer without bias: grad w = s, so w' = w - lr * s and
    # d(sum w')/ds = -2 lr, carried by the graph of the gradient.
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.7]]))
    s = torch.tensor(1.5, requires_grad=True)
    stepped = stepped_parameters(layer, lambda params: s * params["weight"].sum(), lr=0.1)
    torch.testing.assert_close(stepped["weight"], torch.tensor([[0.3 - 0.15, -0.7 - 0.15]]))
    (grad,) = torch.autograd.grad(stepped["weight"].sum(), s)
    torch.testing.assert_close(grad, torch.tensor(-0.2))
    assert layer.weight.grad is None


def test_call_with_leaves_batchnorm_statistics_alone():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).train()
    before = {name: b.clone() for name, b in model.named_buffers()}
    params = dict(model.named_parameters())
    call_with(model, params, torch.randn(8, 3))
    assert all(torch.equal(before[name], b) for name, b in model.named_buffers())


def test_the_score_reaches_the_scheduler_on_the_step_after_a_kept_batch_and_the_model_never():
    defense = build_defense(_config())
    plain = build_defense(_config(objective="allocate-min"))
    plain.load_state_dict(defense.state_dict())
    plain.objective = None  # the same step with no scheduler objective at all
    model = LinearClassifier(6, 3, seed=1)
    received = []
    for step in range(4):
        x, y, idx = _batch(seed=step)
        model.zero_grad()
        defense.zero_grad()
        torch.manual_seed(step)
        out = defense.step(model, x, y, idx)
        out.loss.backward()
        model_grads = [p.grad.clone() for p in model.parameters()]
        received.append(any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in defense.parameters()))
        model.zero_grad()
        torch.manual_seed(step)
        reference = plain.step(model, x, y, idx)
        reference.loss.backward()
        torch.testing.assert_close(out.loss, reference.loss)
        for got, want in zip(model_grads, [p.grad for p in model.parameters()]):
            torch.testing.assert_close(got, want)
    # every 2: the batches of steps 0 and 2 are kept and scored on steps 1 and 3
    assert received == [False, True, False, True]


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**16), st.floats(1e-3, 0.5))
def test_budgets_stay_in_range_with_the_mean_held_while_learning(seed, lr):
    torch.manual_seed(seed)
    defense = build_defense(_config(lookahead_every=1))
    optimiser = torch.optim.Adam(defense.parameters(), lr=lr)
    model = LinearClassifier(6, 3, seed=seed % 7)
    for step in range(4):
        out = defense.step(model, *_batch(seed=seed + step))
        eps = out.budget.eps.double()
        assert bool(((eps >= EPS_MIN - 1e-9) & (eps <= EPS_MIN + LAM + 1e-9)).all())
        assert float(eps.mean()) == pytest.approx(EPS_MIN + LAM / 2, abs=1e-6)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
