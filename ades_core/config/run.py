"""The run's configuration, :class:`RunConfig`: its sections, built from a mapping, and copies.

Building a ``RunConfig`` checks every field (in its section) and then every
rule across sections (:mod:`ades_core.config.rules`), so a bad value or
combination fails before anything runs or is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from ades_core.cli_metadata import cli
from ades_core.config.components import AttackOptions, CueOptions, SchedulerOptions, default_alpha
from ades_core.config.defense_options import DefenseOptions
from ades_core.config.rules import check_budgets, check_run
from ades_core.config.sections import DEFAULT_EVAL_EPS, BudgetConfig, DataConfig, EvalConfig, ModelConfig, OptimConfig
from ades_core.config_fields import ConfigError, _device, _in_choices, _int_at_least, _positive_or_none, _registered
from ades_core.registries import DEFENSES
from ades_core.training_config import EmaConfig, LoggingConfig, ValidationConfig

SECTIONS: dict[str, type] = {
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
"""The sections of a :class:`RunConfig` by field name (the other fields are top-level values)."""


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


AMP_MODES = ("auto", "off", "bf16", "fp16")
"""Mixed precision: auto (bf16 on CUDA, off on CPU), off, bf16 or fp16."""

ON_NONFINITE = ("stop", "skip")
"""What a NaN or Inf loss or gradient does: stop the run, or skip the step."""


@attrs.frozen(kw_only=True)
class RunConfig:
    """Everything one training run needs; ``config.json`` of a run folder."""

    defense: str = attrs.field(
        default="ades",
        validator=_registered(DEFENSES),
        metadata=cli(
            "Training method: ades, pgd-at, static-des, trades, mart, mma, free-at, fast-at, iaat, cat (see `ades list`).",
        ),
    )
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
    seed: int = attrs.field(
        default=0,
        validator=_int_at_least(0),
        metadata=cli("Seed of every random choice."),
    )
    device: str = attrs.field(default="auto", validator=_device, metadata=cli("auto, cpu, cuda or cuda:N."))
    amp: str = attrs.field(
        default="auto",
        validator=_in_choices(*AMP_MODES),
        metadata=cli("Mixed precision (auto: bf16 on CUDA, off on CPU).", choices=AMP_MODES),
    )
    log_every: int = attrs.field(
        default=10,
        validator=_int_at_least(1),
        metadata=cli("Refresh the progress line every N steps."),
    )
    checkpoint_every: int | None = attrs.field(
        default=None,
        validator=_positive_or_none,
        metadata=cli(
            "Also save the resumable training state every N steps (it is always saved after each epoch).",
            kind="positive_int",
        ),
    )
    """Also write the training state every this many steps (None: at the end of each epoch only)."""
    on_nonfinite: str = attrs.field(
        default="stop",
        validator=_in_choices(*ON_NONFINITE),
        metadata=cli(
            "A NaN/Inf loss or gradient stops the run, or its step is skipped.",
            choices=ON_NONFINITE,
        ),
    )
    """``stop``: a NaN/Inf loss or gradient ends the run; ``skip``: that step is undone and skipped."""
    compile: bool = attrs.field(
        default=False,
        validator=attrs.validators.instance_of(bool),
        metadata=cli("torch.compile the model's forward passes."),
    )
    """``torch.compile`` the model's forward passes (whole, and split features/head)."""
    sync_bn: bool = attrs.field(
        default=False,
        validator=attrs.validators.instance_of(bool),
        metadata=cli("Under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)."),
    )
    """Under ``torchrun``, normalise BatchNorm over the global batch (no effect on one process)."""

    def __attrs_post_init__(self) -> None:
        check_run(self)  # every rule across sections, before anything is loaded or built

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
        """Every budget within its norm's range, and the defense and attack able to train in the
        norm (:func:`ades_core.config.rules.check_budgets`); raises :class:`ConfigError`."""
        check_budgets(self)

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
            if key in SECTIONS and isinstance(value, Mapping):
                try:
                    updates[key] = attrs.evolve(getattr(self, key), **value)
                except ConfigError as exc:
                    raise exc.within(key) from None
            else:
                updates[key] = value
        return attrs.evolve(self, **updates)
