"""Typed, validated run configuration (attrs, frozen) and budget parsing.

Every field is checked when a config is constructed, so a bad value fails
before anything runs or is written. Budgets are radii in the run's norm
(``attack.norm``, :mod:`ades_core.norms`): L-inf in [0, 1] pixel scale, given
as ``"8/255"`` or ``0.0314``; L2 a Euclidean radius in pixel space such as
``0.5``. A section checks that a budget is a number >= 0; the run checks its
range for the norm (:meth:`RunConfig.check_budgets`). Names of components are
checked against their registries (the built-ins and any loaded plugins).

``RunConfig`` defaults are the paper's setting (WRN-34-10, 100 epochs, PGD-10
training with alpha 2/255, SGD 0.1 / 0.9 / 5e-4, decay x0.1 at 75% and 90%);
presets in :mod:`ades_core.presets` override them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from ades_core.config_fields import (  # noqa: F401  (re-exported: the public names live here too)
    ConfigError,
    EPS_FIELD,
    OPTIONAL_EPS_FIELD,
    UnknownNameError,
    _DEVICE,
    _boolean,
    _comma_tuple,
    _device,
    _each_registered,
    _eps_field,
    _float_tuple,
    _in_choices,
    _int_at_least,
    _is_int,
    _is_number,
    _named,
    _number_in,
    _optional_eps_field,
    _path,
    _positive_or_none,
    _registered,
    _training_attack,
    format_eps,
    parse_budget,
    parse_budget_number,
    parse_comma_list,
    parse_eps,
    parse_lam,
    parse_non_negative_budget,
)
from ades_core.registries import (
    ATTACK_LOSSES,
    ATTACKS,
    CUES,
    DATASETS,
    DEFENSES,
    LR_SCHEDULES,
    SCHEDULER_OBJECTIVES,
    SCHEDULERS,
)
from ades_core.norms import NORMS
from ades_core.registry import RegistryError
from ades_core.registry_info import DEFAULT_SCHEDULER, DEFAULT_SCHEDULER_LR  # noqa: F401  (re-exported)
from ades_core.training_config import EmaConfig, LoggingConfig, ValidationConfig, check_training_rules

# ---------------------------------------------------------------- sections


@attrs.frozen(kw_only=True)
class DataConfig:
    """Which data, how much of it, in which batches."""

    dataset: str = attrs.field(default="cifar10", validator=_registered(DATASETS))
    data_dir: Path = attrs.field(default=Path("~/.cache/ades/data"), converter=_named(_path))
    train_subset: int | None = attrs.field(default=None, validator=_positive_or_none)
    test_subset: int | None = attrs.field(default=None, validator=_positive_or_none)
    batch_size: int = attrs.field(default=128, validator=_int_at_least(1))
    augment: bool = attrs.field(default=True, validator=_boolean)
    download: bool = attrs.field(default=True, validator=_boolean)
    image_size: int | None = attrs.field(default=None, validator=_positive_or_none)


@attrs.frozen(kw_only=True)
class ModelConfig:
    """The classifier: a timm model name (``ades_*`` or any timm model)."""

    backbone: str = attrs.field(default="ades_wrn34_10")
    drop_rate: float = attrs.field(default=0.0, validator=_number_in(0.0, 1.0, high_open=True))

    @backbone.validator
    def _known(self, attribute: attrs.Attribute, value: str) -> None:
        from ades_core.backbones.factory import check_backbone_name

        try:
            check_backbone_name(value)
        except RegistryError as exc:
            raise UnknownNameError(attribute.name, str(exc)) from None


@attrs.frozen(kw_only=True)
class BudgetConfig:
    """Budgets in the run's norm (``attack.norm``): L-inf in [0, 1] pixel scale, L2 a Euclidean radius.

    ``eps`` is the fixed budget of fixed-budget defenses (pgd-at); adaptive
    defenses use ``eps_x = eps_min + lam * sigma(x)`` in ``[eps_min, eps_min + lam]``.
    The defaults are L-inf's (8/255, 4/255, 8/255); the run checks each
    budget's range for its norm (:meth:`RunConfig.check_budgets`).
    """

    eps: float = attrs.field(default=8 / 255, converter=EPS_FIELD)
    eps_min: float = attrs.field(default=4 / 255, converter=EPS_FIELD)
    lam: float = attrs.field(default=8 / 255, converter=EPS_FIELD)

    @property
    def eps_max(self) -> float:
        return self.eps_min + self.lam


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
    )
    mc_samples: int = attrs.field(default=3, validator=_int_at_least(2))
    mc_dropout_p: float = attrs.field(
        default=0.3, validator=_number_in(0.0, 1.0, low_open=True, high_open=True)
    )
    mc_mode: str = attrs.field(
        default="auto", validator=_in_choices("auto", "modules", "head", "features")
    )
    point: str = attrs.field(default="start", validator=_in_choices("start", "clean"))

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

    name: str | None = attrs.field(default=None)
    hidden: int = attrs.field(default=32, validator=_int_at_least(1))
    weights: tuple[float, ...] | None = attrs.field(default=None, converter=_named(_float_tuple))
    objective: str = attrs.field(
        default="target-quantile", validator=_registered(SCHEDULER_OBJECTIVES)
    )
    lr: float | None = attrs.field(default=None)
    init_std: float = attrs.field(default=1e-2, validator=_number_in(0.0))
    grad_norm: str = attrs.field(default="none", validator=_in_choices("none", "rms"))
    target_loss: float | None = attrs.field(default=None)
    penalty: float = attrs.field(default=100.0, validator=_number_in(0.0))
    random_std: float = attrs.field(default=1 / math.sqrt(12), validator=_number_in(0.0, 1 / math.sqrt(12)))
    reverse: bool = attrs.field(default=False, validator=_boolean)
    shuffle: bool = attrs.field(default=False, validator=_boolean)
    lookahead_every: int = attrs.field(default=4, validator=_int_at_least(1))
    lookahead_lr: float = attrs.field(default=0.1, validator=_number_in(0.0, low_open=True))

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


DEFAULT_EVAL_EPS = {"linf": 8 / 255, "l2": 0.5}
"""The evaluation budget of each norm when none is given: the RobustBench CIFAR-10 leaderboards'."""


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

    norm: str = attrs.field(default="linf", validator=_registered(NORMS))
    name: str = attrs.field(default="pgd", validator=_registered(ATTACKS))
    bn: str = attrs.field(default="eval", validator=_in_choices("eval", "train"))
    steps: int = attrs.field(default=10, validator=_int_at_least(1))
    alpha: float | None = attrs.field(
        default=attrs.Factory(lambda self: default_alpha(self.norm), takes_self=True), converter=OPTIONAL_EPS_FIELD
    )
    random_start: bool = attrs.field(default=True, validator=_boolean)
    loss: str = attrs.field(default="ce", validator=_registered(ATTACK_LOSSES))
    # Evaluation attacks only (ades_core.evaluation.specs sets it): a sample is broken if any
    # PGD iterate broke it, not only the last (see ades_core.attacks.pgd.PGD).
    keep_broken: bool = attrs.field(default=False, validator=_boolean)

    @alpha.validator
    def _positive(self, attribute: attrs.Attribute, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ConfigError(attribute.name, "the PGD step size must be positive, got 0")


MMA_DEFAULT_MAX_EPS = {"linf": 32 / 255, "l2": 2.0}
"""MMA's d_max when ``mma_max_eps`` is unset, per norm (the authors' MMA-32 and MMA-2.0)."""

TRAINING_LOSSES = ("ce", "trades", "mart")
"""The outer loss of a budgeted defense (pgd-at, static-des, ades): cross-entropy on
``x_adv`` (Madry), TRADES's clean CE + beta * KL, or MART's boosted CE + beta * weighted KL."""


@attrs.frozen(kw_only=True)
class DefenseOptions:
    """Settings of particular defenses; each field names the defenses it applies to.

    ``loss`` (pgd-at, static-des, ades): the outer training loss, one of
    :data:`TRAINING_LOSSES`; the inner attack maximises the matching loss
    (the attack loss, CE, for ``ce`` and ``mart``; KL to the clean prediction
    for ``trades``); see :mod:`ades_core.defenses.losses`.
    ``beta`` (trades, mart, and ``loss`` trades/mart): weight of the robustness term.
    ``replays`` (free-at): minibatch replays m; the run's epochs are divided by m.
    ``awp`` (pgd-at, trades, mart, ades): adversarial weight perturbation of relative
    size ``awp_gamma`` per layer, from (0-based) epoch ``awp_warmup`` on.
    ``fast_alpha_ratio`` (fast-at): the FGSM step as a multiple of eps (1.25 in Wong et al.).
    Budgets here are in the run's norm; unset (``None``) ones take the norm's
    default (:meth:`mma_d_max`, :meth:`iaat_step`, :meth:`iaat_cap`).
    ``mma_*`` (mma): ``mma_max_eps`` the hinge's d_max (margins >= it add no
    loss; the search looks up to 1.05 d_max), ``mma_min_eps`` the smallest
    radius a margin search starts from, ``mma_clean_weight`` the weight of the
    clean CE, ``mma_search_steps`` the bisection steps, ``mma_margin`` the
    bisection's "flipped" test: ``hard`` (the logit margin, the paper's
    definition) or ``soft`` (the log-sum-exp margin, as the authors' code).
    ``iaat_*`` (iaat): ``iaat_warmup`` epochs at the fixed ``eps`` before the
    per-sample budgets adapt, ``iaat_gamma`` the budget step, ``iaat_beta`` the
    weight of the new value in the running average, ``iaat_max_eps`` the
    budgets' upper bound (unset: none, as the paper).
    ``cat_*`` (cat): ``cat_ramp`` the fraction of the epochs over which eps
    rises to ``eps``; ``cat_steps`` raises the PGD steps with it.
    """

    loss: str = attrs.field(default="ce", validator=_in_choices(*TRAINING_LOSSES))
    beta: float = attrs.field(default=6.0, validator=_number_in(0.0))
    replays: int = attrs.field(default=8, validator=_int_at_least(1))
    awp: bool = attrs.field(default=False, validator=_boolean)
    awp_gamma: float = attrs.field(default=5e-3, validator=_number_in(0.0, low_open=True))
    awp_warmup: int = attrs.field(default=0, validator=_int_at_least(0))
    fast_alpha_ratio: float = attrs.field(default=1.25, validator=_number_in(0.0, low_open=True))
    mma_max_eps: float | None = attrs.field(default=None, converter=OPTIONAL_EPS_FIELD)
    mma_min_eps: float = attrs.field(default=0.005, converter=EPS_FIELD)
    mma_clean_weight: float = attrs.field(default=1 / 3, validator=_number_in(0.0, 1.0))
    mma_search_steps: int = attrs.field(default=10, validator=_int_at_least(1))
    mma_margin: str = attrs.field(default="hard", validator=_in_choices("hard", "soft"))
    iaat_warmup: int = attrs.field(default=10, validator=_int_at_least(0))
    iaat_gamma: float | None = attrs.field(default=None, converter=OPTIONAL_EPS_FIELD)
    iaat_beta: float = attrs.field(default=0.1, validator=_number_in(0.0, 1.0, low_open=True))
    iaat_max_eps: float | None = attrs.field(default=None, converter=OPTIONAL_EPS_FIELD)
    cat_ramp: float = attrs.field(default=0.5, validator=_number_in(0.0, 1.0, low_open=True))
    cat_steps: bool = attrs.field(default=False, validator=_boolean)

    def mma_d_max(self, norm: str = "linf") -> float:
        """``mma_max_eps``, or the norm's default d_max: 32/255 (L-inf, the authors' MMA-32),
        2.0 (L2, the authors' MMA-2.0)."""
        if self.mma_max_eps is not None:
            return self.mma_max_eps
        return MMA_DEFAULT_MAX_EPS[norm]

    def iaat_step(self, norm: str, eps: float) -> float:
        """``iaat_gamma``, or the norm's default: 1.9/255 (L-inf, the authors'); for L2 the same
        fraction of the warm-up budget, ``eps * 1.9 / 8`` (0.119 at eps 0.5)."""
        if self.iaat_gamma is not None:
            return self.iaat_gamma
        return 1.9 / 255 if norm == "linf" else eps * 1.9 / 8

    def iaat_cap(self, norm: str = "linf", eps: float = 8 / 255) -> float:
        """``iaat_max_eps``, or in effect none (the authors' update has none): 1 for L-inf, which
        holds the whole box; ``8 * eps`` for L2 (4.0 at eps 0.5), above any budget the rule
        reaches in a run (it would take ``8 * eps / gamma`` = 34 net upward steps)."""
        if self.iaat_max_eps is not None:
            return self.iaat_max_eps
        return 1.0 if norm == "linf" else 8 * eps

    @mma_max_eps.validator
    def _mma_margin_range(self, attribute: attrs.Attribute, value: float | None) -> None:
        d_max = self.mma_d_max()
        if value is not None and value <= 0:
            raise ConfigError(attribute.name, "must be a positive budget (d_max), got 0")
        if value is not None and not 0 < self.mma_min_eps < d_max:
            raise ConfigError(
                "mma_min_eps",
                f"must lie in (0, mma_max_eps = {format_eps(d_max)}), got {self.mma_min_eps:.4g}",
            )
        if value is None and not 0 < self.mma_min_eps:
            raise ConfigError("mma_min_eps", f"must be positive, got {self.mma_min_eps:.4g}")


@attrs.frozen(kw_only=True)
class OptimConfig:
    """SGD on the model and its learning-rate schedule.

    ``schedule``: a name in :data:`~ades_core.registries.LR_SCHEDULES`:
    ``multistep`` (``lr`` decayed by ``gamma`` at the ``milestones``, fractions
    of the epochs, stepped per epoch), ``cosine`` (from ``lr`` to 0, stepped
    per iteration), ``one-cycle`` (OneCycleLR, linear from ``lr / 1e4`` up to ``lr``
    over the first ``warmup`` of the iterations and back down, stepped per
    iteration), ``cyclic`` (one triangle from 0 up to ``lr`` at ``warmup`` of the
    iterations and back to 0, stepped per iteration: Wong et al.'s cyclic rate).
    """

    epochs: int = attrs.field(default=100, validator=_int_at_least(1))
    lr: float = attrs.field(default=0.1, validator=_number_in(0.0, low_open=True))
    momentum: float = attrs.field(default=0.9, validator=_number_in(0.0, 1.0, high_open=True))
    weight_decay: float = attrs.field(default=5e-4, validator=_number_in(0.0))
    milestones: tuple[float, ...] = attrs.field(default=(0.75, 0.9), converter=_named(_float_tuple))
    gamma: float = attrs.field(default=0.1, validator=_number_in(0.0, 1.0, low_open=True))
    schedule: str = attrs.field(default="multistep", validator=_registered(LR_SCHEDULES))
    warmup: float = attrs.field(default=0.5, validator=_number_in(0.0, 1.0, low_open=True, high_open=True))

    @milestones.validator
    def _fractions(self, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
        if any(not 0.0 < m <= 1.0 for m in value) or list(value) != sorted(value):
            raise ConfigError(
                attribute.name, f"milestones must be increasing fractions in (0, 1], got {value}"
            )

    def milestone_epochs(self) -> list[int]:
        """Epochs (0-based, the LR drops at their start): 75 and 90 for 100 epochs."""
        return [round(m * self.epochs) for m in self.milestones]


@attrs.frozen(kw_only=True)
class EvalConfig:
    """The per-epoch held-out check: clean and PGD-``steps`` accuracy at ``eps`` (the run's norm).

    ``eps`` unset (``None``): the norm's usual budget, 8/255 for L-inf, 0.5
    for L2 (:data:`DEFAULT_EVAL_EPS`). ``alpha``: the PGD step; unset: the
    norm's default, 2/255 for L-inf, ``2.5 * eps / steps`` for L2
    (:func:`default_alpha`). The builder records the resolved values
    (:meth:`RunConfig.with_resolved_defaults`).
    """

    eps: float | None = attrs.field(default=None, converter=OPTIONAL_EPS_FIELD)
    steps: int = attrs.field(default=20, validator=_int_at_least(1))
    alpha: float | None = attrs.field(default=None, converter=OPTIONAL_EPS_FIELD)
    batch_size: int = attrs.field(default=256, validator=_int_at_least(1))
    every: int = attrs.field(default=1, validator=_int_at_least(1))


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "budget": BudgetConfig,
    "cues": CueOptions,
    "scheduler": SchedulerOptions,
    "attack": AttackOptions,
    "defense_options": DefenseOptions,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "val": ValidationConfig,
    "ema": EmaConfig,
    "logging": LoggingConfig,
}


def _section(cls: type) -> Any:
    def convert(value: Any, field: attrs.Attribute) -> Any:
        if isinstance(value, Mapping):
            try:
                return _from_mapping(cls, value)
            except ConfigError as exc:
                raise exc.within(field.name) from None
        if not isinstance(value, cls):
            raise ConfigError(field.name, f"expected a mapping of {cls.__name__} fields, got {value!r}")
        return value

    return attrs.field(
        factory=cls, converter=attrs.Converter(convert, takes_field=True), validator=v.instance_of(cls)
    )


def _from_mapping(cls: type, values: Mapping[str, Any]) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(cls.__name__, f"expected a mapping of fields, got {type(values).__name__}")
    known = {f.name for f in attrs.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            ", ".join(unknown),
            f"unknown {cls.__name__} field(s); known: {', '.join(sorted(known))}",
        )
    return cls(**values)


def default_scheduler(defense: str) -> str:
    """The scheduler ``defense`` uses when the config names none (``scheduler.name`` is ``None``):
    its registered :attr:`~ades_core.registry_info.DefenseInfo.scheduler` (:data:`DEFAULT_SCHEDULER` by default)."""
    return DEFENSES.entry(defense).info.scheduler


ON_NONFINITE = ("stop", "skip")
"""What a NaN or Inf loss or gradient does: stop the run, or skip the step."""


@attrs.frozen(kw_only=True)
class RunConfig:
    """Everything one training run needs; ``config.json`` of a run folder."""

    defense: str = attrs.field(default="ades", validator=_registered(DEFENSES))
    data: DataConfig = _section(DataConfig)
    model: ModelConfig = _section(ModelConfig)
    budget: BudgetConfig = _section(BudgetConfig)
    cues: CueOptions = _section(CueOptions)
    scheduler: SchedulerOptions = _section(SchedulerOptions)
    attack: AttackOptions = _section(AttackOptions)
    defense_options: DefenseOptions = _section(DefenseOptions)
    optim: OptimConfig = _section(OptimConfig)
    eval: EvalConfig = _section(EvalConfig)
    val: ValidationConfig = _section(ValidationConfig)
    ema: EmaConfig = _section(EmaConfig)
    logging: LoggingConfig = _section(LoggingConfig)
    seed: int = attrs.field(default=0, validator=_int_at_least(0))
    device: str = attrs.field(default="auto", validator=_device)
    amp: str = attrs.field(default="auto", validator=_in_choices("auto", "off", "bf16", "fp16"))
    log_every: int = attrs.field(default=10, validator=_int_at_least(1))
    checkpoint_every: int | None = attrs.field(default=None, validator=_positive_or_none)
    """Also write the training state every this many steps (None: at the end of each epoch only)."""
    on_nonfinite: str = attrs.field(default="stop", validator=_in_choices(*ON_NONFINITE))
    """``stop``: a NaN/Inf loss or gradient ends the run; ``skip``: that step is undone and skipped."""
    compile: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """``torch.compile`` the model's forward passes (whole, and split features/head)."""
    sync_bn: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Under ``torchrun``, normalise BatchNorm over the global batch (no effect on one process)."""

    def __attrs_post_init__(self) -> None:
        self.check_budgets()
        weights = self.scheduler.weights
        if weights is not None and len(weights) != len(self.cues.names):
            raise ConfigError(
                "scheduler.weights",
                f"{len(weights)} scheduler weights for {len(self.cues.names)} cues "
                f"({','.join(self.cues.names)}); give one weight per cue",
            )
        _training_attack(self, attrs.fields(AttackOptions).name, self.attack.name)
        if self.attack.bn != "eval" and not DEFENSES.entry(self.defense).info.attack_bn:
            raise ConfigError(
                "attack.bn",
                f"defense {self.defense!r} runs its own attack and ignores the BN mode; "
                "--attack-bn train applies to PGD-based defenses (pgd-at, trades, mart, static-des, ades, fast-at, cat)",
            )
        check_training_rules(self.val, self.eval.every)

    @property
    def norm(self) -> str:
        """The run's threat model (``attack.norm``): ``linf`` or ``l2``."""
        return self.attack.norm

    def budget_fields(self) -> dict[str, float | None]:
        """Every budget of the run by its dotted field, in the run's norm (``None``: the norm's default)."""
        options = self.defense_options
        return {
            "budget.eps": self.budget.eps,
            "budget.eps_min": self.budget.eps_min,
            "budget.lam": self.budget.lam,
            "attack.alpha": self.attack.alpha,
            "eval.eps": self.eval.eps,
            "eval.alpha": self.eval.alpha,
            "defense_options.mma_max_eps": options.mma_max_eps,
            "defense_options.mma_min_eps": options.mma_min_eps,
            "defense_options.iaat_gamma": options.iaat_gamma,
            "defense_options.iaat_max_eps": options.iaat_max_eps,
        }

    def check_budgets(self) -> None:
        """Every budget within its norm's range, and the defense and attack able to train in the norm.

        Raises:
            ConfigError: one line naming the field, its value and the range of
                the norm (L-inf [0, 1]; L2 [0, inf), the image size is checked by
                the builder), or the defense / attack without this norm.
        """
        threat = NORMS.get(self.norm)
        for field, value in self.budget_fields().items():
            if value is None:
                continue
            try:
                threat.check_budget(value, threat.format(value))
            except ValueError as exc:
                raise ConfigError(field, f"{exc} for --norm {self.norm}") from None
        if self.budget.eps_max > threat.budget_limit() + 1e-12:
            raise ConfigError(
                "budget.lam",
                f"eps_min + lam = {format_eps(self.budget.eps_max)} exceeds 1 (pixel scale); "
                "lower --eps-min or --lam",
            )
        defense = DEFENSES.entry(self.defense).info
        norms = defense.norms if defense.norms is not None else tuple(NORMS.names())
        if self.norm not in norms:
            why = defense.norm_note
            raise ConfigError(
                "attack.norm",
                f"defense {self.defense!r} trains in {', '.join(norms)} only, not {self.norm}"
                + (f": {why}" if why else ""),
            )
        attack_norms = ATTACKS.entry(self.attack.name).info.norms
        if self.norm not in attack_norms:
            raise ConfigError(
                "attack.name",
                f"attack {self.attack.name!r} supports norm(s) {', '.join(attack_norms)}, not {self.norm}",
            )

    def with_resolved_defaults(self) -> RunConfig:
        """The same run with every "the norm's default" made explicit: the scheduler
        (:meth:`with_resolved_scheduler`), ``eval.eps`` and ``eval.alpha`` (``None`` stays
        for L2's relative step), MMA's d_max; ``config.json`` records these."""
        config = self.with_resolved_scheduler()
        changes: dict[str, Any] = {}
        if config.eval.eps is None:
            changes["eval"] = {"eps": DEFAULT_EVAL_EPS[config.norm]}
        if config.eval.alpha is None and default_alpha(config.norm) is not None:
            changes.setdefault("eval", {})["alpha"] = default_alpha(config.norm)
        if config.defense == "mma" and config.defense_options.mma_max_eps is None:
            changes["defense_options"] = {"mma_max_eps": config.defense_options.mma_d_max(config.norm)}
        return config.evolve(**changes) if changes else config

    def scheduler_name(self) -> str:
        """The scheduler this run uses: ``scheduler.name``, or the defense's own (:func:`default_scheduler`)."""
        return self.scheduler.name or default_scheduler(self.defense)

    def with_resolved_scheduler(self) -> RunConfig:
        """The same run with ``scheduler.name`` set to :meth:`scheduler_name` (``None`` means that
        name, so the two configs train alike; the builder records the named one)."""
        if self.scheduler.name is not None:
            return self
        return self.evolve(scheduler={"name": self.scheduler_name()})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """Rebuild from :meth:`to_dict` output (``config.json``); unknown keys fail."""
        return _from_mapping(cls, values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings, tuples as lists)."""

        def serialise(inst: Any, field: attrs.Attribute, value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return list(value)
            return value

        return attrs.asdict(self, value_serializer=serialise)

    def evolve(self, **changes: Any) -> RunConfig:
        """A copy with top-level fields or ``section={field: value}`` changes applied."""
        updates: dict[str, Any] = {}
        for key, value in changes.items():
            if key in _SECTIONS and isinstance(value, Mapping):
                try:
                    updates[key] = attrs.evolve(getattr(self, key), **value)
                except ConfigError as exc:
                    raise exc.within(key) from None
            else:
                updates[key] = value
        return attrs.evolve(self, **updates)
