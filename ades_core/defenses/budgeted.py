"""Adversarial training with per-sample budgets: PGD-AT, Static-DES and ADES (and TRADES, MART).

The three differ only in their parts: PGD-AT has no cues and a fixed budget,
Static-DES a fixed weighted mean of the cues, ADES a learnable MLP trained with
a scheduler objective through the envelope-theorem gradient. Each trains on an
outer loss of :mod:`ades_core.defenses.losses` (``ce``, ``trades``, ``mart``);
TRADES and MART are PGD-AT's fixed budget with their loss. Any of them may add
adversarial weight perturbation (:mod:`ades_core.defenses.awp`).
"""

from __future__ import annotations


import attrs
import torch
from torch import Tensor, nn

from ades_core.attacks.breaking import BreakingRadius
from ades_core.batch_reduction import LOCAL, BatchReduction
from ades_core.config import AttackOptions, BudgetConfig, DefenseOptions
from ades_core.cues import extract_cues
from ades_core.defenses.awp import AppliedPerturbation, WeightPerturbation
from ades_core.defenses.controls import reverse_allocation, shuffle_allocation
from ades_core.defenses.envelope import envelope_input
from ades_core.defenses.losses import TrainingLoss, training_loss
from ades_core.distributed import unwrap_model
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.protocols import (
    BreakingRecorder,
    Budget,
    BudgetedAttack,
    CueContext,
    CueExtractor,
    RobustnessTarget,
    Scheduler,
    StartSharingAttack,
    StepOutput,
    TargetFitting,
)
from ades_core.schedulers.lookahead import LookAhead, VirtualBatch, call_with
from ades_core.schedulers.objectives import SchedulerObjective, attach_objective


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
    """The run's budgets (eps, eps_min, lam), in the norm of ``attack_options.norm``."""
    attack_options: AttackOptions = attrs.field(factory=AttackOptions)
    """The training attack's settings (norm, steps, alpha), for defenses that run their own attack."""
    num_samples: int = 0
    """Training-set size: per-sample state is indexed by dataset index in ``[0, num_samples)``."""
    reverse: bool = False
    """The reversed control: the attack uses :func:`reverse_allocation` of the learned budgets."""
    shuffle: bool = False
    """The shuffled control: the attack uses :func:`shuffle_allocation` of the learned budgets."""
    reduction: BatchReduction = LOCAL
    """How the defense reduces over its batch (cue normalisation, the reversed control,
    per-sample state): :data:`~ades_core.batch_reduction.LOCAL` on one process, the global
    batch under ``torchrun`` (the builder's, from the run's distributed context)."""


class BudgetedAdversarialTraining(nn.Module):
    """Cues -> scheduler -> per-sample budgets -> attack -> outer loss on ``x_adv`` (and ``x``).

    The model loss is ``mean_i L_i`` with ``L_i`` the outer loss
    (:mod:`ades_core.defenses.losses`): ``CE(f(x_adv_i), y_i)`` for ``ce``,
    TRADES's or MART's for ``trades``/``mart``, whose inner attacks use the
    same per-sample balls ``eps_i``. When the scheduler is learnable and an
    objective is given, the same backward pass also gives the scheduler
    ``w_i * dL_i/d eps_i * d eps_i/d theta`` (``w_i`` from the objective)
    through the adversarial input (:func:`envelope_input`), and the model's own
    gradients are unchanged by it.

    With AWP (``parts.options.awp``), after the attack the weights are moved
    to ``w + v`` (:class:`~ades_core.defenses.awp.WeightPerturbation`), the
    loss is taken there, and ``StepOutput.after_update`` removes ``v`` once the
    optimiser has stepped.

    Where the cues are evaluated (``cue_point``):

    * ``start`` (shared, the default): PGD's random start is drawn in the
      smallest ball every sample shares, ``x0 = clip(x + eps_min * u, 0, 1)``
      with ``u`` uniform in the unit ball of the run's norm; the cues are evaluated at ``x0``, and the
      input gradient they computed there is PGD's first step. Cues then cost
      no forward/backward beyond PGD's own (plus ``T`` head passes for
      MC-dropout). For a fixed budget (PGD-AT) this is exactly Madry's start.
    * ``clean``: the cues are evaluated at the clean ``x`` (the paper's
      definition) and PGD draws its start in each sample's own ball: one
      extra forward/backward per batch.

    With an objective that fits a measured target (``target``,
    :mod:`ades_core.schedulers.target`), no envelope path is built: the
    attack reports each sample's breaking radius from its own iterates (a
    :class:`~ades_core.attacks.breaking.BreakingRadius`; the start's logits
    come from the shared cue pass, the last iterate's from the training
    forward, so no forward is added), and the fit enters the loss as
    ``J - J.detach()``, which trains the scheduler only.

    ``parts.reverse`` / ``parts.shuffle`` (the controls): the attack and the
    loss use :func:`reverse_allocation` / :func:`shuffle_allocation` of the
    scheduler's budgets, while the scheduler learns as it would uncontrolled.
    """

    def __init__(self, name: str, parts: DefenseParts, *, loss: str | None = None) -> None:
        """``loss``: the outer loss (``ce``, ``trades``, ``mart``); ``None`` takes ``parts.options.loss``."""
        super().__init__()
        self.name = name
        self.cue_extractors = tuple(parts.cues)
        self.scheduler = parts.scheduler
        self.training_loss: TrainingLoss = training_loss(loss or parts.options.loss)
        self.beta = float(parts.options.beta)
        self.attack = self.training_loss.inner_attack(parts.attack)
        self.objective = parts.objective
        self.autocast_dtype = parts.autocast_dtype
        self.norm = parts.attack_options.norm
        self.awp = (
            WeightPerturbation(parts.options.awp_gamma, parts.options.awp_warmup, reduction=parts.reduction)
            if parts.options.awp
            else None
        )
        self.shares_start = parts.cue_point == "start" and isinstance(self.attack, StartSharingAttack)
        self.shares_gradient = self.shares_start and self.attack.loss_name == "ce"
        # the start is drawn as the attack would (resolved here, at build time)
        self._draw_start = self.attack.draw_start if self.shares_start and self.attack.random_start else None
        self.fits_target = isinstance(self.objective, TargetFitting)
        if self.fits_target and not isinstance(self.attack, BreakingRecorder):
            raise ValueError(
                f"the scheduler objective fits a breaking radius read from the attack's iterates; "
                f"attack {type(self.attack).__name__} does not report them (use pgd)"
            )
        self.looks_ahead = isinstance(self.objective, LookAhead)
        self._kept: VirtualBatch | None = None
        self._steps = 0
        self.reduction = parts.reduction
        self.reverse = bool(parts.reverse)
        self.shuffle = bool(parts.shuffle)
        if self.reverse and self.shuffle:
            raise ValueError("the reversed and the shuffled control exclude each other")

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Before each epoch (0-based ``epoch`` of ``epochs``): switches AWP on after its warm-up."""
        if self.awp is not None:
            self.awp.start_epoch(epoch, epochs)

    def step(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        """One batch's loss: cues -> budgets -> attack -> loss (the trainer runs the rest of
        the step, :mod:`ades_core.engine.step`). ``model`` may be a ``DistributedDataParallel``
        wrapper: only the training forward goes through it (so DDP syncs exactly that
        backward); cues, the attack and the clean logits use the module inside."""
        train_model, model = model, unwrap_model(model)
        outer = self.training_loss

        # 1. cues: at the attack's start point (cue_point "start", shared) or at the clean x
        start = self._start_point(x) if self.shares_start else None
        ctx = CueContext(model, x if start is None else start, y, self.autocast_dtype, reduction=self.reduction)
        cues = extract_cues(self.cue_extractors, ctx)

        # 2. budgets: the scheduler's eps (B,), or a control's reallocation of them
        learned = self.scheduler(cues)
        budget = self._controlled(learned)
        eps = budget.eps

        # 3. attack: x_adv within each sample's ball eps_i
        prediction = learned.prediction
        fit = self.fits_target and prediction is not None and prediction.requires_grad
        breaking = BreakingRadius(x, y, norm=self.norm) if fit else None
        clean_logits = self._clean_logits(ctx, x)  # eval mode, before any weight perturbation
        x_adv = self._attack(model, ctx, x, outer.attack_target(y, clean_logits), start, eps, breaking)

        # 4. loss: the outer loss at x_adv (at AWP's perturbed weights), with the scheduler's
        #    objective attached to eps; the trainer's backward runs both
        perturbation = self._perturb_weights(model, x, x_adv, y) if self._awp_on() else None
        envelope = self.objective is not None and not (self.fits_target or self.looks_ahead) and eps.requires_grad
        model_input = envelope_input(x, x_adv, eps, norm=self.norm) if envelope else x_adv
        with autocast_for(x, self.autocast_dtype):
            logits_nat = train_model(x) if outer.uses_clean else None
            logits = train_model(model_input)
        per_sample = outer.per_sample(
            logits.float(), y, None if logits_nat is None else logits_nat.float(), self.beta
        )
        loss = per_sample.mean()
        if envelope:  # the envelope objective: tensor hooks on eps, run by the backward
            attach_objective(self.objective, eps, per_sample)
        if self.looks_ahead and eps.requires_grad:  # the lookahead objective: loss + (J - J.detach())
            loss = self._look_ahead_step(model, loss, x, x_adv, y, cues)
        measured = None
        if breaking is not None:  # the target objective: loss + (J - J.detach())
            breaking.observe(x_adv, logits.detach().float())  # the last iterate, by the training forward
            loss, measured = self._fit_target(loss, prediction, breaking, idx)
        return StepOutput(
            loss=loss,
            logits_adv=logits.detach().float(),
            budget=budget.detach(),
            logits_clean=clean_logits,
            cues=cues if cues.values.shape[1] else None,
            after_update=None if perturbation is None else perturbation.restore,
            target=measured,
        )

    def _controlled(self, learned: Budget) -> Budget:
        """The budgets the attack and the loss use: ``learned``, or a control's reallocation of it."""
        if self.reverse:
            return reverse_allocation(learned, self.reduction)
        if self.shuffle:
            return shuffle_allocation(learned)
        return learned

    def _attack(
        self, model: nn.Module, ctx: CueContext, x: Tensor, target: Tensor, start: Tensor | None, eps: Tensor,
        breaking: BreakingRadius | None,
    ) -> Tensor:
        """The attack's ``x_adv`` for ``target`` (labels, or TRADES's clean logits) within ``eps``.

        From a shared ``start`` the first step is taken here, with the input
        gradient the cues already computed at it (``ctx.input_grad``, when the
        attack ascends the cross-entropy and a cue ran the shared pass), so it
        costs no forward/backward; otherwise the attack draws its own start.
        """
        if start is None:
            return self.attack(model, x, target, eps.detach(), **self._breaking(breaking))
        first_grad = ctx.input_grad if self.shares_gradient and ctx.has_logits else None
        if breaking is not None and first_grad is not None:
            breaking.observe(start, ctx.logits)  # the attack's first iterate, forwarded by the cues
        return self.attack(
            model, x, target, eps.detach(), start=start, start_grad=first_grad, **self._breaking(breaking)
        )

    @staticmethod
    def _breaking(breaking: BreakingRadius | None) -> dict[str, BreakingRadius]:
        """The attack's ``breaking=`` keyword, only when a radius is recorded (other attacks lack it)."""
        return {} if breaking is None else {"breaking": breaking}

    def _fit_target(
        self, loss: Tensor, sigma: Tensor, breaking: BreakingRadius, idx: Tensor
    ) -> tuple[Tensor, RobustnessTarget]:
        """``loss + (J - J.detach())`` for the target objective's fit ``J`` of ``sigma`` (the
        scheduler's prediction, ``Budget.prediction``), and what was measured; with the
        ``quantile`` allocation the scheduler also records the measured targets."""
        objective = self.objective
        radius = objective.target_radius(breaking.radius)
        target_sigma = objective.target_sigma(radius)
        held_out = objective.held_out(idx)
        fit = objective.fit_loss(sigma, target_sigma, held_out)
        if objective.allocation == "quantile":
            self.scheduler.record_targets(target_sigma, ~held_out)
        prediction, deviation = objective.deviations(sigma.detach(), target_sigma, held_out)
        measured = RobustnessTarget(
            radius=radius, broken=breaking.broken, deviation=deviation, prediction=prediction, held_out=held_out
        )
        return loss + (fit - fit.detach()).to(loss.dtype), measured

    def _look_ahead_step(self, model: nn.Module, loss: Tensor, x: Tensor, x_adv: Tensor, y: Tensor, cues) -> Tensor:
        """The ``lookahead`` objective's part of a step: score the batch kept at the last due step
        on this one (``loss + (J - J.detach())``), then keep this batch if this step is due."""
        if self._kept is not None:
            kept, self._kept = self._kept, None
            budget = self.scheduler(kept.cues)  # the kept batch's budgets, with the scheduler's graph
            model_input = envelope_input(kept.x, kept.x_adv, budget.eps, norm=self.norm)
            outer = self.training_loss

            def virtual_loss(params) -> Tensor:
                with autocast_for(kept.x, self.autocast_dtype):
                    nat = call_with(model, params, kept.x) if outer.uses_clean else None
                    adv = call_with(model, params, model_input)
                return outer.per_sample(adv.float(), kept.y, None if nat is None else nat.float(), self.beta).mean()

            with autocast_for(x, self.autocast_dtype):
                score = self.objective.score(model, virtual_loss, x, x_adv, y)
            loss = loss + (score - score.detach()).to(loss.dtype)
        if self.objective.keeps(self._steps):
            self._kept = VirtualBatch(
                x=x.detach(), x_adv=x_adv.detach(), y=y.detach(),
                cues=attrs.evolve(cues, values=cues.values.detach()),
            )
        self._steps += 1
        return loss

    def _awp_on(self) -> bool:
        return self.awp is not None and self.awp.active

    def _perturb_weights(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> AppliedPerturbation:
        """AWP: add ``v`` from one ascent step of the outer loss (on a proxy) to ``model``'s weights."""
        outer = self.training_loss

        def loss_of(net: nn.Module) -> Tensor:
            with autocast_for(x, self.autocast_dtype):
                logits_nat = net(x) if outer.uses_clean else None
                logits = net(x_adv)
            nat = None if logits_nat is None else logits_nat.float()
            return outer.per_sample(logits.float(), y, nat, self.beta).mean()

        return self.awp.perturb(model, loss_of)

    def _start_point(self, x: Tensor) -> Tensor:
        """The attack's random start in the smallest ball every sample shares, clipped to [0, 1].

        ``clip(x + eps_min * u, 0, 1)``, ``u ~ U[-1, 1]``, for PGD's uniform start;
        ``clip(x + 0.001 * N(0, 1), 0, 1)`` for TRADES's and MART's start; ``x``
        itself (a copy) when the attack has no random start (``random_start=False``).
        """
        if self._draw_start is None:
            return x.clone()
        return self._draw_start(x, self.scheduler.eps_min)

    @staticmethod
    def _clean_logits(ctx: CueContext, x: Tensor) -> Tensor:
        """Clean logits for the train-accuracy metric: the cues' if taken at ``x``, else one eval forward."""
        if ctx.has_logits and ctx.x is x:
            return ctx.logits
        with torch.no_grad(), eval_mode(ctx.model), autocast_for(x, ctx.autocast_dtype):
            return ctx.model(x).float()


def budgeted_defense(name: str, *, loss: str | None = None):
    """The ``DEFENSES`` factory of a budgeted defense; ``loss`` fixes its outer loss (trades, mart)."""

    def factory(parts: DefenseParts) -> BudgetedAdversarialTraining:
        return BudgetedAdversarialTraining(name, parts, loss=loss)

    return factory
