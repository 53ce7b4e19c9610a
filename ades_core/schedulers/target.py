"""The ``target`` objective: fit the scheduler to a robustness target measured by the attack.

Every fixed-mean envelope objective scales the same derivative
``d_i = dL_i/d eps_i``, positive and nearly uniform, so nothing tells the
scheduler which sample is more robust than another and it learns almost no
spread (docs/scheduler.md). This objective hands it a per-sample label
instead, read from the training PGD's own iterates at no extra forward pass
(:class:`~ades_core.attacks.breaking.BreakingRadius`):

* ``t_i = ||x_k - x||_inf`` of the first iterate ``x_k`` the model
  misclassified (pixel scale), a bound on the sample's breaking radius;
* a sample never broken within its ball is *censored*: all we know is
  ``t_i >= eps_i``. Its target is ``eps_max`` (the top of the range), not
  ``eps_i`` plus a margin: a censored target tied to ``eps_i`` would confirm
  whatever budget the sample already had (a small budget that the attack
  cannot break in would keep a small target), while ``eps_max`` pushes it up
  until the attack, given a larger ball, either breaks it (then ``t_i`` is
  measured and pulls it back) or cannot (then it deserves the top budget).
  The fixed point is the IAAT/MMA rule: a budget near each sample's own
  breaking radius.

The target on the sigma scale is ``s_i = clip((t_i - eps_min) / lam, 0, 1)``
and the scheduler fits its deviation from the batch mean:

    J = sum_{i fitted} ((sigma_i - mean_B(sigma)) - (s_i - mean_fitted(s)))^2 / (2 B)

while the allocation is ``mean`` (:func:`~ades_core.schedulers.mlp.centre_sigma`):
the batch mean budget stays exactly ``eps_min + lam / 2`` and the objective
only shapes the allocation. Every ``holdout_every``-th dataset index is left
out of ``J``; the telemetry scores the fit on those samples (held-out R^2 and
Spearman of sigma against ``s``: how well the cues predict robustness).

Why a second allocation. The fitted sigma is the regression ``E[s | cues]``,
whose spread is the target's spread times the correlation the cues reach:
cues that explain a few percent of the target's variance give a spread of a
few tenths of 1/255, and the budget stays in effect fixed however well the
fit is done. ``target-quantile`` separates *how much* the budgets differ
from *who gets which*: the scheduler keeps a running quantile function of
the measured targets ``s`` (:meth:`~ades_core.schedulers.mlp.MLPScheduler.record_targets`),
and each sample's budget is that function at the rank of its fitted output
in the batch, centred (``sigma_i = 1/2 + (q_i - mean(q)) / 2``, the mean
exactly 1/2 as with ``mean``). The spread is thus the measured spread of the
breaking radii (halved); what is learned is the order. If the cues do not
predict the order, the allocation is as good as a random permutation of it,
which is what the study's shuffled control measures.

``J`` reaches the scheduler as an explicit loss term, added to the training
loss as ``J - J.detach()`` (zero in value, so the reported loss is the
model's, bit for bit), not through the envelope path: ``J`` depends on the
scheduler's parameters only (the cues are detached), so the model's gradient
is unchanged by it (tested). Measurements and defaults: docs/scheduler.md.
"""

from __future__ import annotations


import attrs
import torch
from torch import Tensor

from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.batch_reduction import LOCAL, BatchReduction
from ades_core.errors import InputError
from ades_core.registries import SCHEDULER_OBJECTIVES

HOLDOUT_EVERY = 8
"""Every 8th dataset index (``idx % 8 == 0``) is held out of the fit and scores it."""

TARGET_LR = 3e-2
"""The ``target`` objective's Adam learning rate when ``--scheduler-lr`` is not given."""


@attrs.frozen
class RobustnessTargetFit:
    """Fit sigma to the measured breaking radius (see the module docstring).

    Args:
        eps_min, lam: the budget range, [0, 1] pixel scale, ``lam > 0``.
        holdout_every: samples with ``idx % holdout_every == 0`` are not fitted
            (``>= 2``).
        allocation: ``mean`` (``target``: the budget is the fitted sigma,
            centred) or ``quantile`` (``target-quantile``: the scheduler fits its
            raw output and allocates the running quantiles of the measured
            targets by that output's rank; see the module docstring).
        reduction: the batch's reduction for the deviations' batch means
            (:mod:`ades_core.batch_reduction`; the global batch under ``torchrun``).
    """

    eps_min: float
    lam: float
    holdout_every: int = HOLDOUT_EVERY
    allocation: str = attrs.field(default="mean", validator=attrs.validators.in_(("mean", "quantile")))
    reduction: BatchReduction = attrs.field(default=LOCAL, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not self.lam > 0:
            raise InputError("the target objective needs lam > 0 (a budget range to allocate)")
        if self.holdout_every < 2:
            raise ValueError(f"holdout_every must be >= 2, got {self.holdout_every}")

    @property
    def eps_max(self) -> float:
        return self.eps_min + self.lam

    def eps_grad(self, grad: Tensor, eps: Tensor, per_sample_loss: Tensor) -> Tensor:
        """Zero: this objective learns from :meth:`fit_loss`, not from ``dL/d eps``."""
        return torch.zeros_like(grad)

    def target_radius(self, radius: Tensor) -> Tensor:
        """``t`` ``(B,)``: the breaking radius, or ``eps_max`` where it is ``inf`` (never broken)."""
        return torch.where(torch.isfinite(radius), radius, torch.full_like(radius, self.eps_max))

    def target_sigma(self, target: Tensor) -> Tensor:
        """``s = clip((t - eps_min) / lam, 0, 1)`` ``(B,)``: the target on the sigma scale."""
        return ((target - self.eps_min) / self.lam).clamp(0.0, 1.0)

    def held_out(self, idx: Tensor) -> Tensor:
        """``(B,)`` bool: the samples (by dataset index) left out of the fit."""
        return idx % self.holdout_every == 0

    def deviations(self, sigma: Tensor, target_sigma: Tensor, held_out: Tensor) -> tuple[Tensor, Tensor]:
        """``(prediction, target)`` deviations ``(B,)`` from their batch means.

        ``prediction = sigma - mean_B(sigma)`` (with sigma's graph);
        ``target = s - mean(s)`` over the fitted samples (detached; 0 for all
        if none is fitted). The means are over :attr:`reduction`'s batch (the
        global one under ``torchrun``).
        """
        reduction = self.reduction
        fitted = (~held_out).to(target_sigma.dtype)
        count = reduction.total(fitted).clamp(min=1.0)
        target_mean = reduction.total(target_sigma * fitted) / count
        return sigma - reduction.mean(sigma), (target_sigma - target_mean).detach()

    def fit_loss(self, sigma: Tensor, target_sigma: Tensor, held_out: Tensor) -> Tensor:
        """``J`` (0-d): half the squared error of the deviations, summed over the fitted samples / B."""
        prediction, target = self.deviations(sigma, target_sigma, held_out)
        fitted = (~held_out).to(prediction.dtype)
        return ((prediction - target).square() * fitted).sum() / (2 * sigma.shape[0])


def _target_fit(
    options: SchedulerOptions, *, budget: BudgetConfig, reduction: BatchReduction = LOCAL
) -> RobustnessTargetFit:
    return RobustnessTargetFit(budget.eps_min, budget.lam, reduction=reduction)


def _target_quantile_fit(
    options: SchedulerOptions, *, budget: BudgetConfig, reduction: BatchReduction = LOCAL
) -> RobustnessTargetFit:
    return RobustnessTargetFit(budget.eps_min, budget.lam, allocation="quantile", reduction=reduction)


SCHEDULER_OBJECTIVES.register(
    "target",
    _target_fit,
    description="fixed mean budget; fit sigma to each sample's breaking radius, read from PGD's iterates",
    paper="amortised per-sample search (after IAAT, MMA); see docs/scheduler.md",
    lr=TARGET_LR,
    fits_target=True,
    reduces_batch=True,
)

SCHEDULER_OBJECTIVES.register(
    "target-quantile",
    _target_quantile_fit,
    description="fixed mean budget; budgets are the measured breaking radii's quantiles, given by the rank "
    "of sigma fitted to each sample's radius (the default)",
    paper="amortised per-sample search (after IAAT, MMA); see docs/scheduler.md",
    lr=TARGET_LR,
    fits_target=True,
    reduces_batch=True,
)
