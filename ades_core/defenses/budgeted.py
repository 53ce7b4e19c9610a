"""Adversarial training with per-sample budgets: PGD-AT, Static-DES and ADES.

The three differ only in their parts: PGD-AT has no cues and a fixed budget,
Static-DES a fixed weighted mean of the cues, ADES a learnable MLP trained with
a scheduler objective through the envelope-theorem gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ades_core.config import AttackOptions, BudgetConfig, DefenseOptions
from ades_core.cues import extract_cues
from ades_core.distributed import unwrap_model
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.protocols import BudgetedAttack, CueContext, CueExtractor, Scheduler, StepOutput
from ades_core.schedulers.objectives import SchedulerObjective


@attrs.frozen(kw_only=True)
class DefenseParts:
    """What the builder hands a defense factory (``DEFENSES`` contract)."""

    cues: tuple[CueExtractor, ...]
    scheduler: Scheduler
    attack: BudgetedAttack
    objective: SchedulerObjective | None = None
    autocast_dtype: torch.dtype | None = None
    cue_point: str = attrs.field(default="start", validator=attrs.validators.in_(("start", "clean")))
    options: DefenseOptions = attrs.field(factory=DefenseOptions)
    """The defense-specific settings (TRADES's beta, Free-AT's replays, AWP, ...)."""
    budget: BudgetConfig = attrs.field(factory=BudgetConfig)
    """The run's budgets (eps, eps_min, lam), [0, 1] pixel scale."""
    attack_options: AttackOptions = attrs.field(factory=AttackOptions)
    """The training attack's settings (steps, alpha), for defenses that run their own attack."""
    num_samples: int = 0
    """Training-set size: per-sample state is indexed by dataset index in ``[0, num_samples)``."""


def envelope_input(x: Tensor, x_adv: Tensor, eps: Tensor) -> Tensor:
    """``x_adv`` with a gradient path to ``eps`` as the envelope theorem gives it.

    The value is ``x_adv`` exactly. Its derivative w.r.t. ``eps_i`` is
    ``(x_adv - x) / eps_i`` (the attack's perturbation scaled with its ball)
    on every pixel that is not held by the [0, 1] box, and 0 on the pixels
    the box holds. Backpropagating a loss through it gives
    ``dL_i/d eps_i = <grad_x L_i(x_adv), (x_adv - x) / eps_i>``. At an exact
    maximiser, pixels inside the ball have zero gradient, so this is
    ``sum_j |dL_i/dx_j|`` over the pixels where ``|delta_ij| = eps_i``: the
    Lagrange multiplier of the budget constraint, i.e. the envelope-theorem
    derivative ``dL(f(x + delta*))/d eps``. When a truncated PGD stops short of
    the boundary, the scaled direction still carries the signal, where a
    strict active-set rule would give zero.

    Args:
        x, x_adv: ``(B, C, H, W)``; ``eps``: ``(B,)`` carrying the scheduler's graph.
    """
    view = (-1,) + (1,) * (x.ndim - 1)
    delta = (x_adv - x).detach()
    radius = eps.detach().view(view)
    held_by_box = ((x_adv <= 0) & (delta < 0)) | ((x_adv >= 1) & (delta > 0))
    scaled = delta / torch.where(radius > 0, radius, torch.ones_like(radius))
    direction = torch.where(held_by_box | (radius <= 0), torch.zeros_like(delta), scaled)
    return x_adv.detach() + (eps - eps.detach()).view(view) * direction


class BudgetedAdversarialTraining(nn.Module):
    """Cues -> scheduler -> per-sample budgets -> attack -> cross-entropy on ``x_adv``.

    The model loss is ``mean_i CE(f(x_adv_i), y_i)``. When the scheduler is
    learnable and an objective is given, the same backward pass also gives the
    scheduler ``w_i * dL/d eps_i * d eps_i/d theta`` (``w_i`` from the
    objective), and the model's own gradients are unchanged by it.

    Where the cues are evaluated (``cue_point``):

    * ``start`` (shared, the default): PGD's random start is drawn in the
      smallest ball every sample shares, ``x0 = clip(x + eps_min * u, 0, 1)``
      with ``u`` uniform in [-1, 1]; the cues are evaluated at ``x0``, and the
      input gradient they computed there is PGD's first step. Cues then cost
      no forward/backward beyond PGD's own (plus ``T`` head passes for
      MC-dropout). For a fixed budget (PGD-AT) this is exactly Madry's start.
    * ``clean``: the cues are evaluated at the clean ``x`` (the paper's
      definition) and PGD draws its start in each sample's own ball: one
      extra forward/backward per batch.
    """

    def __init__(self, name: str, parts: DefenseParts) -> None:
        super().__init__()
        self.name = name
        self.cue_extractors = tuple(parts.cues)
        self.scheduler = parts.scheduler
        self.attack = parts.attack
        self.objective = parts.objective
        self.autocast_dtype = parts.autocast_dtype
        self.shares_start = parts.cue_point == "start" and getattr(parts.attack, "accepts_start", False)
        self.shares_gradient = self.shares_start and getattr(parts.attack, "loss_name", None) == "ce"

    def step(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        """One batch's loss. ``model`` may be a ``DistributedDataParallel`` wrapper: only the
        training forward goes through it (so DDP syncs exactly that backward); cues, the
        attack and the clean logits use the module inside."""
        train_model, model = model, unwrap_model(model)
        start = self._start_point(x) if self.shares_start else None
        ctx = CueContext(model, x if start is None else start, y, self.autocast_dtype)
        cues = extract_cues(self.cue_extractors, ctx)
        budget = self.scheduler(cues)
        eps = budget.eps
        if start is None:
            x_adv = self.attack(model, x, y, eps.detach())
        else:
            first_grad = ctx.input_grad if self.shares_gradient and ctx.has_logits else None
            x_adv = self.attack(model, x, y, eps.detach(), start=start, start_grad=first_grad)
        learn_schedule = self.objective is not None and eps.requires_grad
        model_input = envelope_input(x, x_adv, eps) if learn_schedule else x_adv
        with autocast_for(x, self.autocast_dtype):
            logits = train_model(model_input)
        per_sample = F.cross_entropy(logits.float(), y, reduction="none")
        if learn_schedule:
            weight = self.objective.eps_grad_weight(per_sample.detach())
            eps.register_hook(lambda grad: grad * weight)
        return StepOutput(
            loss=per_sample.mean(),
            logits_adv=logits.detach().float(),
            budget=budget.detach(),
            logits_clean=self._clean_logits(ctx, x),
            cues=cues if cues.values.shape[1] else None,
        )

    def _start_point(self, x: Tensor) -> Tensor:
        """``clip(x + eps_min * u, 0, 1)``, ``u ~ U[-1, 1]``: inside every sample's ball."""
        return (x + (torch.rand_like(x) * 2 - 1) * self.scheduler.eps_min).clamp_(0.0, 1.0)

    @staticmethod
    def _clean_logits(ctx: CueContext, x: Tensor) -> Tensor:
        """Clean logits for the train-accuracy metric: the cues' if taken at ``x``, else one eval forward."""
        if ctx.has_logits and ctx.x is x:
            return ctx.logits
        with torch.no_grad(), eval_mode(ctx.model), autocast_for(x, ctx.autocast_dtype):
            return ctx.model(x).float()


def budgeted_defense(name: str):
    def factory(parts: DefenseParts) -> BudgetedAdversarialTraining:
        return BudgetedAdversarialTraining(name, parts)

    return factory
