"""The options handed to component factories: cues, the budget scheduler and the attack.

Each is the section a registered factory receives (:mod:`ades_core.registries`):
:class:`CueOptions` a cue's, :class:`SchedulerOptions` a scheduler's and its
objective's, :class:`AttackOptions` an attack's.
"""

from __future__ import annotations

import math

import attrs

from ades_core.config_fields import (
    OPTIONAL_EPS_FIELD,
    ConfigError,
    _boolean,
    _comma_tuple,
    _each_registered,
    _float_tuple,
    _in_choices,
    _int_at_least,
    _is_number,
    _named,
    _number_in,
    _registered,
)
from ades_core.cli_metadata import cli
from ades_core.norms import NORMS
from ades_core.registries import ATTACK_LOSSES, ATTACKS, CUES, SCHEDULER_OBJECTIVES, SCHEDULERS

MC_MODES = ("auto", "modules", "head", "features")
"""How the mcdropout cue samples (:mod:`ades_core.cues.mcdropout`)."""
CUE_POINTS = ("start", "clean")
"""Where cues are evaluated: the attack's start point, or the clean input."""
GRAD_NORMS = ("none", "rms")
"""How the scheduler's per-sample eps gradient is scaled."""
BN_MODES = ("eval", "train")
"""BatchNorm's mode while a training attack runs."""
NORM_NAMES = tuple(NORMS.names())
"""The threat models a run can train in (:data:`~ades_core.norms.NORMS`)."""

@attrs.frozen(kw_only=True)
class CueOptions:
    """Which cues, where they are evaluated, and how the MC-dropout cue samples.

    ``point``: ``start`` evaluates the cues at the attack's start point
    ``x + eps_min * u`` (``u`` uniform in [-1, 1]) and hands their input
    gradient to PGD as its first step, so cues cost no extra forward/backward;
    ``clean`` evaluates them at the clean ``x``, as the paper defines them, at
    the cost of one more forward/backward per batch.
    ``mc_mode``: see :mod:`ades_core.cues.mcdropout` (``modules``: T full
    passes with the model's dropout layers active; ``head``: T passes of the
    head on shared backbone features; ``features``: dropout of rate
    ``mc_dropout_p`` on the penultimate features; ``auto``: head or modules
    when the model has dropout layers, else features).
    """

    names: tuple[str, ...] = attrs.field(
        default=("grad", "entropy", "mcdropout"),
        converter=_named(_comma_tuple),
        validator=_each_registered(CUES),
        metadata=cli("Comma-separated cues, e.g. grad,entropy,mcdropout.", name="cue", kind="comma_list"),
    )
    mc_samples: int = attrs.field(
        default=3,
        validator=_int_at_least(2),
        metadata=cli("Stochastic passes T of the mcdropout cue."),
    )
    mc_dropout_p: float = attrs.field(
        default=0.3, validator=_number_in(0.0, 1.0, low_open=True, high_open=True),
        metadata=cli("Feature-dropout rate of mcdropout in 'features' mode."),
    )
    mc_mode: str = attrs.field(
        default="auto", validator=_in_choices(*MC_MODES),
        metadata=cli("How mcdropout samples.", choices=MC_MODES),
    )
    point: str = attrs.field(
        default="start",
        validator=_in_choices(*CUE_POINTS),
        metadata=cli(
            "Cues at PGD's start point, sharing its first gradient (start), or at the clean input as the paper (clean).",
            name="cue-point",
            choices=CUE_POINTS,
        ),
    )

    @names.validator
    def _unique(self, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        if len(set(value)) != len(value):
            raise ConfigError(attribute.name, f"cues are repeated: {','.join(value)}")


@attrs.frozen(kw_only=True)
class SchedulerOptions:
    """The budget scheduler; ``name=None`` takes the defense's own default.

    ``hidden``: width of the MLP's hidden layer. ``weights``: the static
    scheduler's non-negative cue weights (one per cue; default equal).
    ``objective``: how a learnable scheduler is trained (see
    :mod:`ades_core.schedulers.objectives` and docs/scheduler.md). ``lr``: Adam
    learning rate of a learnable scheduler (``None``: the objective's own
    default, :meth:`learning_rate`). ``init_std``: std of the MLP's
    output-layer weights at initialisation (bias 0, so sigma starts near 0.5;
    0 starts every sigma at exactly 0.5). ``grad_norm``: ``none`` passes the
    objective's per-sample eps gradient as it is; ``rms`` divides it by its
    batch root-mean-square (detached), so the update's scale does not depend
    on the loss's. ``target_loss``: the loss level rho of the ``loss-target``
    and ``saturating`` objectives (``None``: the batch median of the
    adversarial loss). ``penalty``: weight mu of the ``penalty`` objective's
    quadratic pull of the mean sigma to 1/2. ``random_std``: std of sigma
    drawn by the ``random`` control scheduler, in [0, 1/sqrt(12)] (the
    largest: uniform over the whole budget range). ``reverse``: the reversed
    control: the attack uses the learned budgets with each deviation from the
    batch mean negated (learnable schedulers only; docs/scheduler.md).
    ``shuffle``: the shuffled control: the attack uses the learned budgets in
    a random order within the batch (same budgets, same mean and spread;
    learnable schedulers only; excludes ``reverse``). ``lookahead_every``,
    ``lookahead_lr``: the ``lookahead`` objective's interval in steps and the
    learning rate of its virtual SGD step.
    """

    name: str | None = attrs.field(
        default=None,
        metadata=cli(
            "Budget scheduler: fixed, static, mlp, random (default: the defense's own).",
            name="scheduler",
        ),
    )
    hidden: int = attrs.field(
        default=32,
        validator=_int_at_least(1),
        metadata=cli("Hidden width of the MLP scheduler.", name="scheduler-hidden"),
    )
    weights: tuple[float, ...] | None = attrs.field(
        default=None,
        converter=_named(_float_tuple),
        metadata=cli(
            "Comma-separated weights of the static scheduler, one per cue.",
            name="static-weights",
            kind="text",
        ),
    )
    objective: str = attrs.field(
        default="target-quantile", validator=_registered(SCHEDULER_OBJECTIVES),
        metadata=cli(
            "How the learnable scheduler is trained: target-quantile, target, lookahead, allocate-min, allocate-max, paper, penalty, loss-target, saturating.",
            name="scheduler-objective",
        ),
    )
    lr: float | None = attrs.field(
        default=None,
        metadata=cli(
            "Adam learning rate of the learnable scheduler (default: the objective's own; 3e-2 for target, else 1e-3).",
            name="scheduler-lr",
        ),
    )
    init_std: float = attrs.field(
        default=1e-2,
        validator=_number_in(0.0),
        metadata=cli(
            "Std of the MLP scheduler's output-layer weights at start (0: every sigma starts at 0.5).",
            name="scheduler-init-std",
        ),
    )
    grad_norm: str = attrs.field(
        default="none",
        validator=_in_choices(*GRAD_NORMS),
        metadata=cli(
            "Divide the scheduler's per-sample eps gradient by its batch RMS (rms) or not (none).",
            name="scheduler-grad-norm",
            choices=GRAD_NORMS,
        ),
    )
    target_loss: float | None = attrs.field(
        default=None,
        metadata=cli(
            "Loss level rho of the loss-target and saturating objectives (default: the batch median).",
            name="scheduler-target-loss",
        ),
    )
    penalty: float = attrs.field(
        default=100.0,
        validator=_number_in(0.0),
        metadata=cli(
            "Weight mu of the penalty objective's pull of the mean budget to eps_min + lam/2.",
            name="scheduler-penalty",
        ),
    )
    random_std: float = attrs.field(
        default=1 / math.sqrt(12),
        validator=_number_in(0.0, 1 / math.sqrt(12)),
        metadata=cli(
            "Std of sigma drawn by the random control scheduler, up to 0.2887 (default: uniform over the whole range).",
            name="scheduler-random-std",
            show_default=False,
        ),
    )
    reverse: bool = attrs.field(
        default=False,
        validator=_boolean,
        metadata=cli(
            "Reversed control: train the learnable scheduler as usual, attack with each budget's deviation from the batch mean negated.",
            name="scheduler-reverse",
        ),
    )
    shuffle: bool = attrs.field(
        default=False,
        validator=_boolean,
        metadata=cli(
            "Shuffled control: train the learnable scheduler as usual, attack with the batch's learned budgets in a random order.",
            name="scheduler-shuffle",
        ),
    )
    lookahead_every: int = attrs.field(
        default=4,
        validator=_int_at_least(1),
        metadata=cli(
            "lookahead objective: a look-ahead every this many steps.",
            name="scheduler-lookahead-every",
        ),
    )
    lookahead_lr: float = attrs.field(
        default=0.1,
        validator=_number_in(0.0, low_open=True),
        metadata=cli(
            "lookahead objective: learning rate of the virtual SGD step.",
            name="scheduler-lookahead-lr",
        ),
    )

    @shuffle.validator
    def _one_control(self, attribute: attrs.Attribute, value: bool) -> None:
        if value and self.reverse:
            raise ConfigError("shuffle", "the shuffled and the reversed control exclude each other; choose one")

    @lr.validator
    def _positive_lr(self, attribute: attrs.Attribute, value: float | None) -> None:
        if value is not None:
            _number_in(0.0, low_open=True)(self, attribute, value)

    def learning_rate(self) -> float:
        """``lr``, or the objective's own default (its :attr:`~ades_core.registry_info.ObjectiveInfo.lr`, 1e-3 by default)."""
        if self.lr is not None:
            return float(self.lr)
        return SCHEDULER_OBJECTIVES.entry(self.objective).info.lr

    @name.validator
    def _known(self, attribute: attrs.Attribute, value: str | None) -> None:
        if value is not None:
            _registered(SCHEDULERS)(self, attribute, value)

    @target_loss.validator
    def _loss_level(self, attribute: attrs.Attribute, value: float | None) -> None:
        if value is not None and (not _is_number(value) or value < 0):
            raise ConfigError(
                attribute.name,
                f"must be a loss level >= 0 (cross-entropy, nats) or unset for the batch median, got {value!r}",
            )

    @weights.validator
    def _non_negative(self, attribute: attrs.Attribute, value: tuple[float, ...] | None) -> None:
        if value is not None and (
            any(w < 0 or not math.isfinite(w) for w in value) or sum(value) <= 0
        ):
            raise ConfigError(
                attribute.name, f"scheduler weights must be >= 0 with a positive sum, got {value}"
            )



def default_alpha(norm: str) -> float | None:
    """The step size of an attack whose options name none: 2/255 for L-inf (the paper's); ``None``
    for L2, i.e. ``2.5 * eps_i / steps`` per sample (:data:`~ades_core.norms.STEP_SCALE`)."""
    return 2 / 255 if norm == "linf" else None


@attrs.frozen(kw_only=True)
class AttackOptions:
    """An attack's options: PGD with per-sample budgets, in the L-inf or the L2 ball.

    ``bn``: the mode of the model's BatchNorm layers while a training attack
    runs: ``eval`` (running statistics, as TRADES's and MART's code) or
    ``train`` (each forward normalised with its batch's statistics, and the
    model's other layers in train mode, as Madry's, Rice et al.'s and Wong et
    al.'s code). In neither mode do attack passes update the running
    statistics. Evaluation attacks always run in ``eval``.

    ``norm`` (first, so ``alpha``'s default can follow it): the threat model of
    the run and of its attacks, a name in :data:`~ades_core.norms.NORMS`.
    ``alpha``: the step in the norm's units (L-inf 2/255 by default), or
    ``None``: ``2.5 * eps_i / steps`` per sample (L2's default).
    """

    norm: str = attrs.field(
        default="linf",
        validator=_registered(NORMS),
        metadata=cli(
            "Threat model of training and of the held-out check: linf (budgets in [0, 1] pixel scale, 8/255) or l2 (a Euclidean radius in pixel space, 0.5).",
            choices=NORM_NAMES,
        ),
    )
    name: str = attrs.field(default="pgd", validator=_registered(ATTACKS))
    bn: str = attrs.field(
        default="eval",
        validator=_in_choices(*BN_MODES),
        metadata=cli(
            "BatchNorm mode while the training attack runs: eval (running statistics, TRADES/MART) or train (batch statistics, Madry/Rice/Wong); running statistics are never updated by attacks.",
            name="attack-bn",
            choices=BN_MODES,
        ),
    )
    steps: int = attrs.field(
        default=10,
        validator=_int_at_least(1),
        metadata=cli("PGD steps during training."),
    )
    alpha: float | None = attrs.field(
        default=attrs.Factory(lambda self: default_alpha(self.norm), takes_self=True), converter=OPTIONAL_EPS_FIELD,
        metadata=cli(
            "PGD step size in the norm's units, e.g. 2/255 (default: 2/255 for linf, 2.5 * eps_i / steps per sample for l2).",
            kind="eps",
        ),
    )
    random_start: bool = attrs.field(default=True, validator=_boolean)
    loss: str = attrs.field(
        default="ce",
        validator=_registered(ATTACK_LOSSES),
        metadata=cli("Loss the training attack maximises: ce or cw.", name="attack-loss"),
    )
    # Evaluation attacks only (ades_core.evaluation.specs sets it): a sample is broken if any
    # PGD iterate broke it, not only the last (see ades_core.attacks.pgd.PGD).
    keep_broken: bool = attrs.field(default=False, validator=_boolean)

    @alpha.validator
    def _positive(self, attribute: attrs.Attribute, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ConfigError(attribute.name, "the PGD step size must be positive, got 0")


