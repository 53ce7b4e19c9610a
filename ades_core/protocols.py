"""The four contracts of ades and the values they pass between them.

Units and shapes, everywhere in ades:
  * images ``x`` are float tensors ``(B, C, H, W)`` in ``[0, 1]`` pixel scale;
    input normalisation lives inside the model;
  * budgets ``eps`` are radii in the run's norm (:mod:`ades_core.norms`), one
    per sample: a tensor of shape ``(B,)``. L-inf radii are in the same
    ``[0, 1]`` pixel scale (``8/255 = 0.0314``); L2 radii are Euclidean
    lengths in pixel space (``0.5``);
  * labels ``y`` are int64 ``(B,)``; dataset indices ``idx`` int64 ``(B,)``;
  * every tensor a component makes lives on the device of its input.

One training step, top to bottom::

    Defense.step(model, x, y, idx)
      -> CueExtractor(s) on a CueContext (the batch at the cue point, with shared passes):
         raw cues (B,) each -> Cues (B, k) in [0, 1]
      -> Scheduler(cues): Budget, eps (B,) in [eps_min, eps_max]
      -> BudgetedAttack(model, x, y, eps): x_adv, ||x_adv - x|| <= eps_i (its norm), in [0, 1]
      -> StepOutput(loss, ...)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import attrs
import torch
from torch import Tensor, nn

from ades_core.batch_reduction import LOCAL, BatchReduction
from ades_core.cue_context import CueContext


def _check_tensor(ndim: int):
    def check(instance: object, attribute: attrs.Attribute, value: Tensor) -> None:
        if not isinstance(value, Tensor) or value.ndim != ndim:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{attribute.name} must be a {ndim}-d tensor, got {shape}")

    return check


@attrs.frozen
class Cues:
    """A batch of normalised cues, one column per cue.

    Attributes:
        values: ``(B, k)`` float, each column min-max normalised over the batch
            to ``[0, 1]``; detached (cues carry no gradient into the model).
        names: the ``k`` cue names, in column order.
        reduction: how to reduce over the batch these cues describe: the one the
            cues were normalised with (``CueContext.reduction``); a scheduler takes
            its batch statistics through it (the global batch under ``torchrun``).
    """

    values: Tensor = attrs.field(validator=_check_tensor(2))
    names: tuple[str, ...] = attrs.field(converter=tuple)
    reduction: BatchReduction = attrs.field(default=LOCAL, kw_only=True, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.values.shape[1] != len(self.names):
            raise ValueError(
                f"Cues has {self.values.shape[1]} columns but {len(self.names)} names {self.names}"
            )

    @classmethod
    def empty(cls, batch_size: int, device: torch.device | str, *, reduction: BatchReduction = LOCAL) -> Cues:
        """No cues (for fixed-budget defenses): values of shape ``(B, 0)``."""
        return cls(torch.empty(batch_size, 0, device=device), (), reduction=reduction)

    @property
    def batch_size(self) -> int:
        return self.values.shape[0]

    def column(self, name: str) -> Tensor:
        """The ``(B,)`` column of cue ``name``."""
        return self.values[:, self.names.index(name)]


@attrs.frozen
class Budget:
    """Per-sample budgets for one batch, in the run's norm.

    Attributes:
        eps: ``(B,)`` radii (L-inf: ``[0, 1]`` pixel scale; L2: Euclidean), within ``[eps_min, eps_max]``.
            It may carry a gradient to a learnable scheduler's parameters.
        sigma: ``(B,)`` the scheduler's output in ``[0, 1]``
            (``eps = eps_min + (eps_max - eps_min) * sigma``), or ``None`` for a
            fixed budget.
        eps_min, eps_max: the bounds the scheduler guarantees (floats).
        score: ``(B,)`` in [0, 1] with the scheduler's graph: the prediction an
            objective that fits a measured target fits, when it is not ``sigma``
            itself (the ``quantile`` allocation assigns budgets by the score's
            rank, so sigma carries no graph); ``None``: sigma is the prediction.
    """

    eps: Tensor = attrs.field(validator=_check_tensor(1))
    sigma: Tensor | None = None
    eps_min: float = 0.0
    eps_max: float = 1.0
    score: Tensor | None = None

    def __attrs_post_init__(self) -> None:
        if self.sigma is not None and self.sigma.shape != self.eps.shape:
            raise ValueError(
                f"sigma shape {tuple(self.sigma.shape)} differs from eps {tuple(self.eps.shape)}"
            )
        if not 0.0 <= self.eps_min <= self.eps_max:
            raise ValueError(f"need 0 <= eps_min <= eps_max (inf: no bound), got {self.eps_min}, {self.eps_max}")

    @classmethod
    def from_sigma(cls, sigma: Tensor, eps_min: float, eps_max: float, *, score: Tensor | None = None) -> Budget:
        """``eps = eps_min + (eps_max - eps_min) * sigma``, clamped into the bounds
        (so float rounding can never leave them), for ``sigma`` ``(B,)`` in [0, 1]."""
        eps = (eps_min + (eps_max - eps_min) * sigma).clamp(eps_min, eps_max)
        return cls(eps=eps, sigma=sigma, eps_min=eps_min, eps_max=eps_max, score=score)

    def detach(self) -> Budget:
        sigma = None if self.sigma is None else self.sigma.detach()
        score = None if self.score is None else self.score.detach()
        return attrs.evolve(self, eps=self.eps.detach(), sigma=sigma, score=score)

    @property
    def prediction(self) -> Tensor | None:
        """What a target-fitting objective fits: ``score`` if given, else ``sigma``."""
        return self.sigma if self.score is None else self.score


@attrs.frozen
class RobustnessTarget:
    """A step's measured per-sample robustness target and the scheduler's fit to it
    (the ``target`` objective; :mod:`ades_core.schedulers.target`). All ``(B,)``, detached.

    Attributes:
        radius: ``t_i`` in the run's norm: the distance (L-inf or L2) of the first
            attack iterate the model misclassified, ``eps_max`` for a sample
            never broken within its ball.
        broken: bool, whether the attack broke the sample within its ball.
        deviation: the target on the sigma scale minus its batch mean, ``s_i - mean(s)``.
        prediction: the scheduler's sigma minus its batch mean, ``sigma_i - mean(sigma)``.
        held_out: bool, left out of the fit (the telemetry scores the fit on these).
    """

    radius: Tensor
    broken: Tensor
    deviation: Tensor
    prediction: Tensor
    held_out: Tensor


@attrs.frozen
class StepOutput:
    """What one defense step hands to the trainer.

    Attributes:
        loss: scalar tensor; ``loss.backward()`` gives the gradients of the model
            and of the defense's own parameters (a learnable scheduler).
        logits_adv: ``(B, num_classes)`` on the adversarial inputs, detached.
        logits_clean: ``(B, num_classes)`` on the clean inputs, detached, or
            ``None`` when the defense did not compute them.
        budget: the budgets used, detached.
        cues: the normalised cues the budgets came from, detached, or ``None``
            for a defense without cues (telemetry correlates them with eps).
        target: the measured robustness target of a ``target``-objective
            step, or ``None`` (telemetry scores the scheduler's fit to it).
        after_update: called by the trainer once the optimisers have stepped
            on this loss (and before a skipped step is undone), or ``None``;
            a defense that perturbed the weights for its loss (AWP) removes
            the perturbation here.
        commit: called by the trainer with the step's 0-d bool device tensor
            ``kept`` once the non-finite guard has kept the step (True) or
            undone it (False, ``--on-nonfinite skip``), or ``None``. State a
            defense carries from step to step but may replace rather than
            update in place (Free-AT's ``delta``, whose shape follows the
            batch) is staged in the step and committed here as
            ``torch.where(kept, new, old)``, so a skipped step leaves it as it
            was without a host read. The guard cannot undo a buffer that was
            replaced: it restores the tensors it copied before the step.
    """

    loss: Tensor
    logits_adv: Tensor
    budget: Budget
    logits_clean: Tensor | None = None
    cues: Cues | None = None
    after_update: Callable[[], None] | None = None
    target: RobustnessTarget | None = None
    commit: Callable[[Tensor], None] | None = None


@runtime_checkable
class CueExtractor(Protocol):
    """Computes one raw (unnormalised) per-sample cue.

    Contract: ``__call__(ctx)`` returns a detached float ``(B,)`` tensor on
    ``ctx.x``'s device, finite, in the cue's own units (larger = "harder" is the
    convention, not a requirement). It must not change the model's mode,
    parameters, gradients or BN statistics. Normalisation to [0, 1] over the
    batch is done by the caller, not by the cue (through ``ctx.reduction``).
    """

    name: str

    def __call__(self, ctx: CueContext) -> Tensor: ...


@runtime_checkable
class Scheduler(Protocol):
    """Maps normalised cues to per-sample budgets.

    Contract: ``__call__(cues)`` with ``cues.values`` of shape ``(B, k)`` in
    [0, 1] returns a :class:`Budget` whose ``eps`` ``(B,)`` lies in
    ``[eps_min, eps_max]`` for every input; ``eps = eps_min + (eps_max -
    eps_min) * sigma``. A learnable scheduler is an ``nn.Module`` whose
    parameters receive gradients through ``Budget.eps``. A statistic over the
    batch (a mean to hold) is taken through ``cues.reduction``, never a global:
    under ``torchrun`` it spans the global batch.
    """

    eps_min: float
    eps_max: float

    def __call__(self, cues: Cues) -> Budget: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


@runtime_checkable
class BudgetedAttack(Protocol):
    """An attack with one budget per sample, in one norm (L-inf unless its options say ``l2``).

    Contract: ``__call__(model, x, y, eps)`` with ``x`` ``(B, C, H, W)`` in
    [0, 1], ``y`` ``(B,)`` and ``eps`` ``(B,)`` (or a float, for all samples)
    returns a detached ``x_adv`` of ``x``'s shape, dtype and device with
    ``||x_adv - x|| <= eps_i`` per sample in the attack's norm (up to float32
    rounding) and ``0 <= x_adv <= 1``. Its ``ATTACKS`` entry lists the norms
    it supports (meta ``norms``; ``("linf",)`` when absent). The model's train/eval mode of
    every submodule is the same afterwards as before, and parameter gradients
    are not touched. No host-device synchronisation inside the attack loop.
    """

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor | float) -> Tensor: ...


@runtime_checkable
class Defense(Protocol):
    """One adversarial-training method: the loss of one minibatch.

    Contract: ``step(model, x, y, idx)`` with ``x`` ``(B, C, H, W)`` in [0, 1],
    labels and dataset indices ``(B,)``, called with the model in train mode,
    returns a :class:`StepOutput` whose ``loss.backward()`` produces every
    gradient the method needs (model and the defense's own ``parameters()``).
    The defense does not step optimisers, move tensors between devices or
    write files.

    Capabilities the engine uses when a defense has them, each a protocol
    below, checked with ``isinstance`` where the defense is built:
    :class:`Replaying` (``replays``), :class:`EpochAware` (``start_epoch``),
    :class:`Stateful` (``load_state_dict``, on resume), :class:`BudgetScheduled`
    (``scheduler``: telemetry and ``config.json`` describe its budgets).

    Per-sample state kept across epochs is indexed by the dataset index ``idx``
    and lives on the model's device, in ``state_dict`` (so checkpoints carry it).
    """

    name: str

    def step(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def state_dict(self) -> dict[str, Tensor]: ...


# ------------------------------------------------------------------ capabilities
# Small protocols a component may satisfy besides its family's; the engine and the
# defenses test them with isinstance (never getattr) when a component is built.
# Registries and built-ins: ades_core.registries (CUES, SCHEDULERS, SCHEDULER_OBJECTIVES,
# ATTACKS, DEFENSES), registered in ades_core/{cues,schedulers,attacks,defenses}/.


@runtime_checkable
class StartSharingAttack(Protocol):
    """A :class:`BudgetedAttack` that can start from a point computed elsewhere (PGD).

    ``__call__(model, x, y, eps, *, start=None, start_grad=None)``: ``start``
    ``(B, C, H, W)`` is the first iterate (already in [0, 1], not yet projected
    into the balls) and ``start_grad`` the attack loss's input gradient there,
    so a defense that evaluates its cues at the start hands PGD its first
    gradient. ``draw_start(x, radius)``: the attack's own random start for ``x``
    (clipped to [0, 1]); ``random_start``: whether it draws one at all (else it
    starts at ``x``); ``loss_name``: the loss it ascends (``ce``, ``cw``, ...).
    """

    loss_name: str
    random_start: bool

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor | float, **options: Any) -> Tensor: ...

    def draw_start(self, x: Tensor, radius: Tensor | float) -> Tensor: ...


@runtime_checkable
class BreakingRecorder(Protocol):
    """An attack that shows its iterates to a ``breaking=`` :class:`~ades_core.attacks.breaking.BreakingRadius`
    (each sample's breaking radius, read from the logits it computes anyway); ``records_breaking`` is True."""

    records_breaking: bool


@runtime_checkable
class ReplaceableAttack(Protocol):
    """An attack that makes a copy of itself with some settings changed (``loss=``, ``start_noise=``,
    ``steps=``, ...), as TRADES's and MART's inner maximisations need; ``loss_name`` as above."""

    loss_name: str

    def replace(self, **changes: Any) -> Any: ...


@runtime_checkable
class Named(Protocol):
    """A component with a display ``name`` (reports fall back to its class name)."""

    name: str


@runtime_checkable
class ReportsSettings(Protocol):
    """An evaluation attack that adds what a report must record beyond its options (``settings()``)."""

    def settings(self) -> dict[str, Any]: ...


@runtime_checkable
class Replaying(Protocol):
    """A defense whose every minibatch is replayed ``replays`` times (Free-AT's m), the optimisers
    stepping after each replay; the builder scales the passes over the data to match the epochs."""

    replays: int


def replays_of(defense: object) -> int:
    """How many times ``defense`` takes each minibatch: its ``replays`` if it is :class:`Replaying`, else 1."""
    return int(defense.replays) if isinstance(defense, Replaying) else 1


@runtime_checkable
class EpochAware(Protocol):
    """A component told where training stands: ``start_epoch(epoch, epochs)`` before each epoch
    (0-based ``epoch`` of ``epochs``), for schedules over training (curricula, warm-ups)."""

    def start_epoch(self, epoch: int, epochs: int) -> None: ...


@runtime_checkable
class Stateful(Protocol):
    """A component whose ``state_dict()`` the checkpoint saves and ``load_state_dict(state)`` restores on resume."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@runtime_checkable
class BudgetScheduled(Protocol):
    """A defense whose budgets come from a :class:`Scheduler` (``scheduler``), which telemetry and the
    run's ``config.json`` describe."""

    scheduler: Scheduler


@runtime_checkable
class TargetFitting(Protocol):
    """A scheduler objective that learns from a robustness target measured by the attack (``target``,
    ``target-quantile``) instead of the envelope gradient; see :mod:`ades_core.schedulers.target`.
    Needs an attack that is a :class:`BreakingRecorder`."""

    allocation: str

    def target_radius(self, radius: Tensor) -> Tensor: ...

    def target_sigma(self, target: Tensor) -> Tensor: ...

    def held_out(self, idx: Tensor) -> Tensor: ...

    def deviations(self, sigma: Tensor, target_sigma: Tensor, held_out: Tensor) -> tuple[Tensor, Tensor]: ...

    def fit_loss(self, sigma: Tensor, target_sigma: Tensor, held_out: Tensor) -> Tensor: ...
