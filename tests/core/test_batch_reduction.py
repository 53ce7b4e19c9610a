"""Batch statistics go through the reduction a component is handed, never through a global.

``LOCAL`` (one process) computes what the plain tensor operations compute, bit
for bit. A fake reduction that reduces as if a second rank held more samples
(``OtherRank``) changes what the cue normalisation, the scheduler's fixed mean,
the objectives, the reversed control and per-sample state compute, exactly as
one process holding both parts would: so each of them reads the reduction it
was given. With the distributed global set to a context that fails on any use,
a whole defense step on ``LOCAL`` still runs: no component reads the global.
"""

from __future__ import annotations

import pytest
import torch

from ades_core import RunConfig, build_defense, distributed
from ades_core.batch_reduction import LOCAL, BatchReduction, RankReduction, batch_reduction
from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.cue_context import CueContext
from ades_core.cues import extract_cues, minmax_normalize
from ades_core.defenses.controls import reverse_allocation
from ades_core.protocols import Budget, Cues
from ades_core.registries import CUES, SCHEDULER_OBJECTIVES
from ades_core.schedulers.mlp import MLPScheduler, centre_sigma
from ades_core.schedulers.objectives import rms_normalised, with_grad_norm
from ades_core.schedulers.target import RobustnessTargetFit
from tests.tiny_models import LinearClassifier

EPS_MIN, LAM = 4 / 255, 8 / 255


class OtherRank:
    """A reduction over this batch and ``other``, the slice a second rank would hold (rank 1)."""

    def __init__(self, other: torch.Tensor) -> None:
        self.other = other
        self.calls: list[str] = []

    def _both(self, values: torch.Tensor) -> torch.Tensor:
        return torch.cat([values, self.other.to(values.dtype).detach()])

    def min(self, values):
        self.calls.append("min")
        return self._both(values).amin(dim=0, keepdim=True).detach()

    def max(self, values):
        self.calls.append("max")
        return self._both(values).amax(dim=0, keepdim=True).detach()

    def mean(self, values):
        self.calls.append("mean")
        return self._both(values).mean()

    def total(self, values):
        self.calls.append("total")
        return self._both(values).detach().sum()

    def gather(self, values):
        self.calls.append("gather")
        return self._both(values).detach()

    def assign(self, buffer, idx, values):
        self.calls.append("assign")
        buffer[idx] = values.detach().to(buffer.dtype)

    def average_gradients(self, params):
        self.calls.append("average_gradients")


def _split(whole: torch.Tensor, n: int) -> tuple[torch.Tensor, OtherRank]:
    return whole[:n], OtherRank(whole[n:])


def test_the_reductions_satisfy_the_protocol():
    assert isinstance(LOCAL, BatchReduction) and isinstance(OtherRank(torch.zeros(1)), BatchReduction)
    assert batch_reduction(None) is LOCAL
    context = distributed.DistributedContext(0, 2, 0, "gloo", torch.device("cpu"))
    assert isinstance(batch_reduction(context), RankReduction)


def test_local_computes_the_plain_operations_bit_for_bit():
    values = torch.rand(9, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(LOCAL.min(values), values.amin(dim=0, keepdim=True))
    assert torch.equal(LOCAL.max(values), values.amax(dim=0, keepdim=True))
    column = values[:, 0]
    assert torch.equal(LOCAL.mean(column), column.mean())
    assert torch.equal(LOCAL.total(column), column.sum()) and torch.equal(LOCAL.gather(column), column)
    assert torch.equal(centre_sigma(column), 0.5 + 0.5 * (column - column.mean()))
    low, high = values.amin(0, keepdim=True), values.amax(0, keepdim=True)
    assert torch.equal(minmax_normalize(values), ((values - low) / (high - low)).clamp(0, 1))
    buffer = torch.zeros(4)
    LOCAL.assign(buffer, torch.tensor([3, 1]), torch.tensor([2.0, 5.0], dtype=torch.float64))
    assert buffer.tolist() == [0.0, 5.0, 0.0, 2.0]


def test_minmax_normalize_uses_the_extremes_it_is_handed():
    whole = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [0.0, 50.0], [5.0, 40.0]])
    mine, reduction = _split(whole, 3)
    scaled = minmax_normalize(mine, reduction=reduction)
    assert torch.equal(scaled, minmax_normalize(whole)[:3])
    assert not torch.equal(scaled, minmax_normalize(mine)) and reduction.calls == ["min", "max"]


def test_the_cue_context_carries_its_reduction_to_the_normalisation_and_the_scheduler():
    model = LinearClassifier(6, 3, seed=0)
    x = torch.rand(6, 1, 2, 3, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    entropy = CUES.build("entropy", RunConfig().cues)
    reduction = OtherRank(torch.tensor([[-5.0], [9.0]]))  # another rank's raw entropies
    cues = extract_cues([entropy], CueContext(model, x, y, reduction=reduction))
    local = extract_cues([entropy], CueContext(model, x, y))
    raw = entropy(CueContext(model, x, y))
    torch.testing.assert_close(cues.values[:, 0], (raw + 5.0) / 14.0)
    assert not torch.equal(cues.values, local.values)
    assert cues.reduction is reduction and local.reduction is LOCAL


def test_centre_sigma_and_the_mlp_mean_allocation_hold_the_mean_they_are_handed():
    whole = torch.tensor([0.2, 0.4, 0.9, 0.1, 0.1])
    mine, reduction = _split(whole, 3)
    torch.testing.assert_close(centre_sigma(mine, reduction), centre_sigma(whole)[:3], rtol=0, atol=0)
    torch.manual_seed(0)
    scheduler = MLPScheduler(2, hidden=4, eps_min=EPS_MIN, lam=LAM, allocation="mean", init_std=1.0)
    values = torch.rand(3, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        raw = torch.sigmoid(scheduler.net(values).squeeze(1))
    other = OtherRank(torch.tensor([0.99, 0.98]))
    sigma = scheduler(Cues(values, ("a", "b"), reduction=other)).sigma
    torch.testing.assert_close(sigma, 0.5 + 0.5 * (raw - torch.cat([raw, other.other]).mean()))
    assert not torch.allclose(sigma, scheduler(Cues(values, ("a", "b"))).sigma)


def test_the_objectives_reduce_through_the_reduction_they_are_built_with():
    generator = torch.Generator().manual_seed(4)
    grad, loss = torch.rand(8, generator=generator), 3 * torch.rand(8, generator=generator)
    eps = EPS_MIN + LAM * torch.rand(8, generator=generator)
    options = SchedulerOptions(objective="penalty", penalty=10.0)
    budget = BudgetConfig(eps_min=EPS_MIN, lam=LAM)
    for name in ("penalty", "loss-target", "saturating"):
        whole = SCHEDULER_OBJECTIVES.build(name, options, budget=budget).eps_grad(grad, eps, loss)
        fake = OtherRank((eps[5:] - EPS_MIN) / LAM if name == "penalty" else loss[5:])  # what each reduces
        objective = SCHEDULER_OBJECTIVES.build(name, options, budget=budget, reduction=fake)
        assert SCHEDULER_OBJECTIVES.entry(name).info.reduces_batch
        torch.testing.assert_close(objective.eps_grad(grad[:5], eps[:5], loss[:5]), whole[:5])
        assert fake.calls
    mine, fake = grad[:5], OtherRank(grad[5:].square())  # the RMS reduces the squares
    torch.testing.assert_close(rms_normalised(mine, fake), rms_normalised(grad)[:5])
    normalised = with_grad_norm(SCHEDULER_OBJECTIVES.build("allocate-max", options, budget=budget), "rms", fake)
    torch.testing.assert_close(normalised.eps_grad(mine, eps[:5], loss[:5]), -rms_normalised(grad)[:5])


def test_the_target_fit_takes_its_means_over_the_reduction():
    generator = torch.Generator().manual_seed(5)
    sigma, target = torch.rand(10, generator=generator), torch.rand(10, generator=generator)
    held = torch.arange(10) % 4 == 0
    whole = RobustnessTargetFit(EPS_MIN, LAM).deviations(sigma, target, held)

    class Pairs(OtherRank):  # the fit reduces sigma, the fitted flags and the weighted targets
        def __init__(self):
            super().__init__(torch.zeros(0))
            self.others = iter([(~held[6:]).float(), (target * (~held).float())[6:], sigma[6:]])

        def _both(self, values):
            return torch.cat([values, next(self.others)])

    fit = RobustnessTargetFit(EPS_MIN, LAM, reduction=Pairs())
    prediction, deviation = fit.deviations(sigma[:6], target[:6], held[:6])
    torch.testing.assert_close(prediction, whole[0][:6])
    torch.testing.assert_close(deviation, whole[1][:6])


def test_the_reversed_control_reflects_about_the_mean_it_is_handed():
    eps = torch.tensor([0.02, 0.03, 0.04])
    budget = Budget(eps=eps, eps_min=0.0, eps_max=0.1)
    reversed_ = reverse_allocation(budget, OtherRank(torch.tensor([0.06])))  # the batch mean is 0.0375
    torch.testing.assert_close(reversed_.eps, 2 * 0.0375 - eps)
    torch.testing.assert_close(reverse_allocation(budget).eps, 2 * eps.mean() - eps)


def _ades(**scheduler) -> RunConfig:
    return RunConfig.from_dict(
        {
            "defense": "ades",
            "cues": {"names": "grad,entropy"},
            "attack": {"steps": 2, "alpha": "2/255"},
            "budget": {"eps_min": "4/255", "lam": "8/255"},
            "scheduler": {"init_std": 0.5, **scheduler},
        }
    )


class _Refusing:
    """Stands for an initialised process group: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"a component read the distributed global ({name})")


@pytest.mark.parametrize("objective", ["target", "allocate-min", "penalty"])
def test_a_defense_step_reads_no_global_and_reduces_through_what_the_builder_hands_it(objective, monkeypatch):
    x = torch.rand(8, 1, 2, 3, generator=torch.Generator().manual_seed(0))
    y, idx = torch.arange(8) % 3, torch.arange(8)
    model = LinearClassifier(6, 3, seed=1)
    monkeypatch.setattr(distributed, "_ACTIVE", _Refusing())
    torch.manual_seed(0)
    local = build_defense(_ades(objective=objective)).step(model, x, y, idx)
    local.loss.backward()
    spy = OtherRank(torch.zeros(0))  # no other rank: the same figures, but every call is seen
    torch.manual_seed(0)
    spied = build_defense(_ades(objective=objective), reduction=spy).step(model, x, y, idx)
    spied.loss.backward()
    assert {"min", "max", "mean"} <= set(spy.calls)
    torch.testing.assert_close(spied.budget.eps, local.budget.eps, rtol=0, atol=0)
