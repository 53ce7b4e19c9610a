"""How a learnable scheduler is trained: the objective on its budgets.

The envelope theorem (the paper's Eq. 8-10) gives, for
``L_i(eps_i) = loss(f(x_i + delta_i*), y_i)`` with ``delta_i*`` the attack's
maximiser in the ball ``|delta|_inf <= eps_i``, the derivative
``d_i = dL_i/d eps_i``: the L1 norm of the adversarial input gradient on the
pixels where the ball's constraint is active (see
:func:`ades_core.defenses.budgeted.envelope_input`). One backward pass of the
training loss computes it; :func:`attach_objective` intercepts it on its way
to the scheduler and hands it to the objective, which returns the gradient
``v_i = dJ/d eps_i`` of its own per-sample objective ``J``. The scheduler's
optimiser then *descends* ``J``. The objective also picks the allocation of
the budget: ``free`` (sigma is the MLP's output; the mean budget may drift) or
``mean`` (:func:`ades_core.schedulers.mlp.centre_sigma`: the batch mean of
sigma is exactly 1/2, so only the allocation across samples is learned).

Registered objectives (equations, measurements and advice: docs/scheduler.md),
with ``s_i = (eps_i - eps_min) / lam``:

* ``paper`` (free): ``J = mean_i L_i``, the paper as written. ``d_i >= 0``
  for almost every sample, so every budget shrinks to ``eps_min``; the run
  warns when mean sigma saturates.
* ``allocate-max`` (mean): ``J = -mean_i L_i``: budget moves to the samples
  whose loss grows fastest with eps.
* ``allocate-min`` (mean): ``J = mean_i L_i``: budget moves to the samples
  whose loss grows slowest (the IAAT/MMA direction); the default before ``target-quantile``.
* ``penalty`` (free): ``J = -mean_i L_i + (mu / 2) (mean_i s_i - 1/2)^2``:
  ascend the loss, with a quadratic pull of the mean budget to
  ``eps_min + lam / 2``; the mean settles ``lam * mean(d) / mu`` above it in
  sigma units.
* ``loss-target`` (mean): ``J = mean_i (L_i - rho)^2 / 2``: raises ``eps_i``
  while ``L_i < rho`` and lowers it after, so each sample seeks its own level.
* ``saturating`` (mean): ``J = -mean_i min(L_i, rho)``: only samples whose
  loss is below ``rho`` ask for more budget; the rest stop gaining from it.

``rho`` is ``SchedulerOptions.target_loss``, or by default the median of the
batch's detached adversarial losses (so half the batch is below it).

The batch figures (the ``rms`` normalisation, the median ``rho``, the
``penalty``'s mean budget) are taken through the objective's
:class:`~ades_core.batch_reduction.BatchReduction` (``reduction=``, the
builder's; :data:`~ades_core.batch_reduction.LOCAL` by default): over the
global batch under ``torchrun``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
import torch
from torch import Tensor

from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.config.rules import grad_norm_with_target_fit
from ades_core.batch_reduction import LOCAL, BatchReduction
from ades_core.errors import InputError
from ades_core.protocols import TargetFitting
from ades_core.registries import SCHEDULER_OBJECTIVES

GRAD_NORMS = ("none", "rms")
"""How :func:`with_grad_norm` rescales an objective's per-sample eps gradient."""


@runtime_checkable
class SchedulerObjective(Protocol):
    """Contract of a scheduler objective (``SCHEDULER_OBJECTIVES`` factories
    take ``(options: SchedulerOptions, *, budget: BudgetConfig)``, and
    ``reduction: BatchReduction`` when their record says ``reduces_batch``,
    and return one).

    ``allocation``: ``free`` or ``mean`` (see the module docstring).
    ``eps_grad(grad, eps, per_sample_loss)``: all ``(B,)``, detached, on one
    device: ``grad[i] = dL_i/d eps_i`` (the envelope derivative of sample
    ``i``'s own training loss, loss per unit of pixel-scale eps), ``eps`` the
    budgets in [0, 1] pixel scale, ``per_sample_loss`` the losses ``L_i``.
    Returns ``v`` ``(B,)`` with ``v_i = B * dJ/d eps_i`` for the objective
    ``J``, a batch mean, which the scheduler's optimiser descends: for
    ``J = mean_i J_i(eps_i)``, ``v_i = dJ_i/d eps_i``. No host-device
    synchronisation.
    """

    allocation: str

    def eps_grad(self, grad: Tensor, eps: Tensor, per_sample_loss: Tensor) -> Tensor: ...


def attach_objective(objective: SchedulerObjective, eps: Tensor, per_sample_loss: Tensor) -> None:
    """Make the backward pass of the training loss train the scheduler by ``objective``.

    ``eps`` ``(B,)`` carries the scheduler's graph; ``per_sample_loss`` ``(B,)``
    is the per-sample loss of the training step, computed on
    :func:`~ades_core.defenses.budgeted.envelope_input` so that it depends on
    ``eps``; the training loss is a positively weighted sum of it (a mean, a
    loss-scaled mean under fp16 autocast, ...).

    Two hooks: the first records ``u_i``, the gradient of the training loss
    w.r.t. ``L_i`` as it arrives (``1 / B`` for a mean, times the fp16 loss
    scale); the second receives ``u_i * dL_i/d eps_i`` at ``eps``, divides
    ``u`` out, and replaces it by ``u_i * objective.eps_grad(...)``. The model's
    own gradients are untouched, and whatever scale the training loss carries
    (reduction, loss scaling) carries over to the scheduler, so an optimiser
    step that unscales it stays right.
    """
    loss = per_sample_loss.detach()
    budgets = eps.detach()
    loss_grad: list[Tensor] = []

    def record(grad: Tensor) -> None:
        loss_grad.append(grad.detach())

    def reshape(grad: Tensor) -> Tensor:
        if not loss_grad:
            raise RuntimeError(
                "scheduler objective: the per-sample loss handed to attach_objective is not part of "
                "the training loss, so the envelope gradient dL/d eps cannot be read"
            )
        unit = loss_grad[-1].to(grad.dtype)
        nonzero = unit != 0
        envelope = torch.where(nonzero, grad / torch.where(nonzero, unit, torch.ones_like(unit)), 0.0)
        return unit * objective.eps_grad(envelope, budgets, loss).to(grad.dtype)

    per_sample_loss.register_hook(record)
    eps.register_hook(reshape)


def rms_normalised(values: Tensor, reduction: BatchReduction = LOCAL) -> Tensor:
    """``values / sqrt(mean(values^2))`` for ``(B,)`` values (zeros stay zeros); the mean is
    ``reduction``'s (the global batch's under ``torchrun``)."""
    rms = reduction.mean(values.detach().square()).sqrt()
    return torch.where(rms > 0, values / torch.where(rms > 0, rms, torch.ones_like(rms)), values)


@attrs.frozen
class GradNormalised:
    """``objective`` with its per-sample eps gradient divided by the batch RMS (``rms``).

    After it, ``mean_i v_i^2 = 1`` in every batch: the scheduler's update no
    longer scales with the loss or with ``dL/d eps`` (which grow and shrink
    over training), only the relative sizes and signs across samples remain.
    """

    objective: SchedulerObjective
    reduction: BatchReduction = LOCAL

    @property
    def allocation(self) -> str:
        return self.objective.allocation

    def eps_grad(self, grad: Tensor, eps: Tensor, per_sample_loss: Tensor) -> Tensor:
        return rms_normalised(self.objective.eps_grad(grad, eps, per_sample_loss), self.reduction)


def with_grad_norm(
    objective: SchedulerObjective, grad_norm: str, reduction: BatchReduction = LOCAL
) -> SchedulerObjective:
    """``objective`` as it is (``none``) or wrapped in :class:`GradNormalised` (``rms``, its RMS
    taken through ``reduction``).

    The config refuses ``rms`` with an objective registered ``fits_target``
    (:func:`~ades_core.config.rules.check_scheduler`); an objective built
    directly that fits a target is refused here with the same line.
    """
    if grad_norm not in GRAD_NORMS:
        raise ValueError(f"grad_norm {grad_norm!r} is not one of: {', '.join(GRAD_NORMS)}")
    if grad_norm != "none" and isinstance(objective, TargetFitting):
        raise grad_norm_with_target_fit()
    return objective if grad_norm == "none" else GradNormalised(objective, reduction)


def _loss_level(per_sample_loss: Tensor, target: float | None, reduction: BatchReduction = LOCAL) -> Tensor:
    """``rho``: the given level, or the median of the batch's losses (``reduction``'s batch:
    the global one under ``torchrun``), 0-d, on their device."""
    if target is None:
        return reduction.gather(per_sample_loss).median()
    return per_sample_loss.new_tensor(target)


@attrs.frozen
class SignedEnvelope:
    """``J = sign * mean_i L_i``: ``v_i = sign * dL_i/d eps_i`` (+1 descends L, -1 ascends it)."""

    allocation: str
    sign: float

    def eps_grad(self, grad: Tensor, eps: Tensor, per_sample_loss: Tensor) -> Tensor:
        return self.sign * grad


@attrs.frozen
class MeanPenalty:
    """``J = -mean_i L_i + (mu / 2) (mean_i s_i - 1/2)^2``, ``s_i = (eps_i - eps_min) / lam``.

    Free allocation: every budget is pushed up by its own ``dL_i/d eps_i`` and
    all are pulled back together by ``mu (mean(s) - 1/2) / lam`` (the penalty's
    derivative, shared by the batch: ``v_i = -d_i + mu (mean(s) - 1/2) / lam``).
    At rest ``mean(s) = 1/2 + lam * mean(d) / mu``. ``mu`` is in loss units
    (nats per squared unit of sigma); ``lam > 0`` is required.
    """

    eps_min: float
    lam: float
    weight: float
    allocation: str = "free"
    reduction: BatchReduction = attrs.field(default=LOCAL, kw_only=True)

    def eps_grad(self, grad: Tensor, eps: Tensor, per_sample_loss: Tensor) -> Tensor:
        excess = self.reduction.mean((eps - self.eps_min) / self.lam) - 0.5  # the batch's mean budget
        return -grad + self.weight * excess / self.lam


@attrs.frozen
class LossTarget:
    """``J = mean_i (L_i - rho)^2 / 2``: ``v_i = (L_i - rho) dL_i/d eps_i``.

    Descending it raises ``eps_i`` while ``L_i < rho`` and lowers it once
    ``L_i > rho``. Mean allocation: the batch mean budget is held exactly at
    ``eps_min + lam / 2``, so only the allocation is learned and nothing drifts
    (a free allocation would need rho to follow the mean budget by dual
    ascent: one more state and step size, and a mean that is held only on
    average). ``rho``: ``target`` (nats), or the batch median of the losses.
    """

    target: float | None = None
    allocation: str = "mean"
    reduction: BatchReduction = attrs.field(default=LOCAL, kw_only=True)

    def eps_grad(self, grad: Tensor, eps: Tensor, per_sample_loss: Tensor) -> Tensor:
        return (per_sample_loss - _loss_level(per_sample_loss, self.target, self.reduction)) * grad


@attrs.frozen
class SaturatingGain:
    """``J = -mean_i min(L_i, rho)``: ``v_i = -dL_i/d eps_i`` where ``L_i < rho``, else 0.

    Mean allocation: samples below ``rho`` draw budget from those above it
    (whose loss no longer pays), so the spread does not rest on the small
    differences of a nearly uniform ``dL/d eps``. ``rho``: ``target`` (nats),
    or the batch median of the losses.
    """

    target: float | None = None
    allocation: str = "mean"
    reduction: BatchReduction = attrs.field(default=LOCAL, kw_only=True)

    def eps_grad(self, grad: Tensor, eps: Tensor, per_sample_loss: Tensor) -> Tensor:
        below = per_sample_loss < _loss_level(per_sample_loss, self.target, self.reduction)
        return torch.where(below, -grad, torch.zeros_like(grad))


def _mean_penalty(
    options: SchedulerOptions, *, budget: BudgetConfig, reduction: BatchReduction = LOCAL
) -> MeanPenalty:
    if budget.lam <= 0:
        raise InputError("the penalty objective needs lam > 0 (a budget range to hold the mean in)")
    return MeanPenalty(budget.eps_min, budget.lam, options.penalty, reduction=reduction)


def _loss_target(
    options: SchedulerOptions, *, budget: BudgetConfig, reduction: BatchReduction = LOCAL
) -> LossTarget:
    return LossTarget(options.target_loss, reduction=reduction)


def _saturating(
    options: SchedulerOptions, *, budget: BudgetConfig, reduction: BatchReduction = LOCAL
) -> SaturatingGain:
    return SaturatingGain(options.target_loss, reduction=reduction)


SCHEDULER_OBJECTIVES.register(
    "paper",
    lambda options, *, budget: SignedEnvelope("free", +1.0),
    description="minimise the adversarial loss (the paper's Eq. 8-10); collapses to eps_min",
    paper="ADES paper, Eq. 8-10",
)
SCHEDULER_OBJECTIVES.register(
    "allocate-max",
    lambda options, *, budget: SignedEnvelope("mean", -1.0),
    description="fixed mean budget; more budget where the adversarial loss grows fastest",
)
SCHEDULER_OBJECTIVES.register(
    "allocate-min",
    lambda options, *, budget: SignedEnvelope("mean", +1.0),
    description="fixed mean budget; more budget where the loss grows slowest (IAAT/MMA direction)",
)
SCHEDULER_OBJECTIVES.register(
    "penalty",
    _mean_penalty,
    description="free budget; ascend the loss, quadratic pull of the mean to eps_min + lam/2",
    reduces_batch=True,
)
SCHEDULER_OBJECTIVES.register(
    "loss-target",
    _loss_target,
    description="fixed mean budget; raise eps while the loss is below rho, lower it above",
    paper="after SAAT's loss target; see docs/scheduler.md",
    reduces_batch=True,
)
SCHEDULER_OBJECTIVES.register(
    "saturating",
    _saturating,
    description="fixed mean budget; maximise sum min(L, rho): budget to samples below rho",
    reduces_batch=True,
)
