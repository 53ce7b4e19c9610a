"""Typed, validated run configuration (attrs, frozen) and budget parsing.

Every field is checked when a config is constructed, so a bad value fails
before anything runs or is written. Budgets are L-inf radii in [0, 1] pixel
scale and may be given as ``"8/255"`` or ``0.0314``. Names of components are
checked against their registries (the built-ins and any loaded plugins).

``RunConfig`` defaults are the paper's setting (WRN-34-10, 100 epochs, PGD-10
training with alpha 2/255, SGD 0.1 / 0.9 / 5e-4, decay x0.1 at 75% and 90%);
presets in :mod:`ades_core.presets` override them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from ades_core.registries import (
    ATTACK_LOSSES,
    ATTACKS,
    CUES,
    DATASETS,
    DEFENSES,
    SCHEDULER_OBJECTIVES,
    SCHEDULERS,
)
from ades_core.registry import RegistryError

# ---------------------------------------------------------------- budgets

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def parse_eps(value: str | float | int) -> float:
    """A budget in [0, 1] pixel scale from ``"8/255"``, ``"0.0314"`` or a number.

    Raises:
        ValueError: not a number or fraction, or outside [0, 1].
    """
    if isinstance(value, bool):
        raise ValueError(f"budget must be a number or a fraction like 8/255, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        match = _FRACTION.match(text)
        try:
            if match:
                denominator = float(match.group(2))
                if denominator == 0:
                    raise ZeroDivisionError
                number = float(match.group(1)) / denominator
            else:
                number = float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"budget {value!r} is not a number or a fraction like 8/255"
            ) from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"budget {value!r} is outside [0, 1] (pixel scale: 8/255 = 0.0314)")
    return number


def format_eps(eps: float) -> str:
    """``8/255`` when ``eps`` is a whole (or half) number of 1/255 steps, else ``0.0314``."""
    steps = Fraction(eps * 255).limit_denominator(2)
    if abs(float(steps) - eps * 255) < 1e-6:
        return f"{float(steps):g}/255"
    return f"{eps:.4g}"


def _comma_tuple(value: str | tuple | list) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)


def _float_tuple(value: str | tuple | list | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    parts = _comma_tuple(value) if isinstance(value, str) else tuple(value)
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {value!r}") from None


def _registered(registry) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in registry:
            raise RegistryError(
                f"{attribute.name}: unknown {registry.family} {value!r}; "
                f"registered: {', '.join(registry.names())}"
            )

    return check


def _each_registered(registry) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        for name in value:
            _registered(registry)(instance, attribute, name)

    return check


def _positive_or_none(instance: object, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer or unset, got {value}")


def _in_choices(*choices: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} {value!r} is not one of: {', '.join(choices)}")

    return check


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def _device(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not _DEVICE.match(value):
        raise ValueError(f"device {value!r} is not one of: auto, cpu, cuda, cuda:N, mps")


# ---------------------------------------------------------------- sections


@attrs.frozen(kw_only=True)
class DataConfig:
    """Which data, how much of it, in which batches."""

    dataset: str = attrs.field(default="cifar10", validator=_registered(DATASETS))
    data_dir: Path = attrs.field(default=Path("~/.cache/ades/data"), converter=Path)
    train_subset: int | None = attrs.field(default=None, validator=_positive_or_none)
    test_subset: int | None = attrs.field(default=None, validator=_positive_or_none)
    batch_size: int = attrs.field(default=128, validator=v.ge(1))
    augment: bool = True
    download: bool = True
    image_size: int | None = attrs.field(default=None, validator=_positive_or_none)


@attrs.frozen(kw_only=True)
class ModelConfig:
    """The classifier: a timm model name (``ades_*`` or any timm model)."""

    backbone: str = attrs.field(default="ades_wrn34_10")
    drop_rate: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])

    @backbone.validator
    def _known(self, attribute: attrs.Attribute, value: str) -> None:
        from ades_core.backbones.factory import check_backbone_name

        check_backbone_name(value)


@attrs.frozen(kw_only=True)
class BudgetConfig:
    """L-inf budgets, [0, 1] pixel scale.

    ``eps`` is the fixed budget of fixed-budget defenses (pgd-at); adaptive
    defenses use ``eps_x = eps_min + lam * sigma(x)`` in ``[eps_min, eps_min + lam]``.
    """

    eps: float = attrs.field(default=8 / 255, converter=parse_eps)
    eps_min: float = attrs.field(default=4 / 255, converter=parse_eps)
    lam: float = attrs.field(default=8 / 255, converter=parse_eps)

    @property
    def eps_max(self) -> float:
        return self.eps_min + self.lam

    def __attrs_post_init__(self) -> None:
        if self.eps_max > 1.0 + 1e-12:
            raise ValueError(
                f"eps_min + lam = {format_eps(self.eps_max)} exceeds 1 (pixel scale); "
                "lower --eps-min or --lam"
            )


@attrs.frozen(kw_only=True)
class CueOptions:
    """Which cues, and how the MC-dropout cue samples.

    ``mc_mode``: ``modules`` runs ``mc_samples`` full stochastic forward passes
    with the model's own dropout layers active (BN stays in eval);
    ``features`` applies dropout with rate ``mc_dropout_p`` to the penultimate
    features and runs only the classifier head (works for any model with a
    timm head, with or without dropout layers); ``auto`` uses ``modules`` when
    the model has dropout layers, else ``features``.
    """

    names: tuple[str, ...] = attrs.field(
        default=("grad", "entropy", "mcdropout"),
        converter=_comma_tuple,
        validator=_each_registered(CUES),
    )
    mc_samples: int = attrs.field(default=3, validator=v.ge(2))
    mc_dropout_p: float = attrs.field(default=0.3, validator=[v.gt(0.0), v.lt(1.0)])
    mc_mode: str = attrs.field(default="auto", validator=_in_choices("auto", "modules", "features"))

    @names.validator
    def _unique(self, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        if len(set(value)) != len(value):
            raise ValueError(f"cues are repeated: {','.join(value)}")


@attrs.frozen(kw_only=True)
class SchedulerOptions:
    """The budget scheduler; ``name=None`` takes the defense's own default.

    ``hidden``: width of the MLP's hidden layer. ``weights``: the static
    scheduler's non-negative cue weights (one per cue; default equal).
    ``objective``: how a learnable scheduler is trained (see
    :mod:`ades_core.schedulers.objectives`). ``lr``: Adam learning rate of a
    learnable scheduler.
    """

    name: str | None = attrs.field(default=None)
    hidden: int = attrs.field(default=32, validator=v.ge(1))
    weights: tuple[float, ...] | None = attrs.field(default=None, converter=_float_tuple)
    objective: str = attrs.field(
        default="allocate-max", validator=_registered(SCHEDULER_OBJECTIVES)
    )
    lr: float = attrs.field(default=1e-3, validator=v.gt(0.0))

    @name.validator
    def _known(self, attribute: attrs.Attribute, value: str | None) -> None:
        if value is not None:
            _registered(SCHEDULERS)(self, attribute, value)

    @weights.validator
    def _non_negative(self, attribute: attrs.Attribute, value: tuple[float, ...] | None) -> None:
        if value is not None and (
            any(w < 0 or not math.isfinite(w) for w in value) or sum(value) <= 0
        ):
            raise ValueError(f"scheduler weights must be >= 0 with a positive sum, got {value}")


@attrs.frozen(kw_only=True)
class AttackOptions:
    """The training attack: L-inf PGD with per-sample budgets."""

    name: str = attrs.field(default="pgd", validator=_registered(ATTACKS))
    steps: int = attrs.field(default=10, validator=v.ge(1))
    alpha: float = attrs.field(default=2 / 255, converter=parse_eps)
    random_start: bool = True
    loss: str = attrs.field(default="ce", validator=_registered(ATTACK_LOSSES))

    @alpha.validator
    def _positive(self, attribute: attrs.Attribute, value: float) -> None:
        if value <= 0:
            raise ValueError("alpha (the PGD step size) must be positive")


@attrs.frozen(kw_only=True)
class OptimConfig:
    """SGD on the model, step decay at fractions of the epochs."""

    epochs: int = attrs.field(default=100, validator=v.ge(1))
    lr: float = attrs.field(default=0.1, validator=v.gt(0.0))
    momentum: float = attrs.field(default=0.9, validator=[v.ge(0.0), v.lt(1.0)])
    weight_decay: float = attrs.field(default=5e-4, validator=v.ge(0.0))
    milestones: tuple[float, ...] = attrs.field(default=(0.75, 0.9), converter=_float_tuple)
    gamma: float = attrs.field(default=0.1, validator=[v.gt(0.0), v.le(1.0)])

    @milestones.validator
    def _fractions(self, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
        if any(not 0.0 < m <= 1.0 for m in value) or list(value) != sorted(value):
            raise ValueError(f"milestones must be increasing fractions in (0, 1], got {value}")

    def milestone_epochs(self) -> list[int]:
        """Epochs (0-based, the LR drops at their start): 75 and 90 for 100 epochs."""
        return [round(m * self.epochs) for m in self.milestones]


@attrs.frozen(kw_only=True)
class EvalConfig:
    """The per-epoch held-out check: clean and PGD-``steps`` accuracy at ``eps``."""

    eps: float = attrs.field(default=8 / 255, converter=parse_eps)
    steps: int = attrs.field(default=20, validator=v.ge(1))
    alpha: float = attrs.field(default=2 / 255, converter=parse_eps)
    batch_size: int = attrs.field(default=256, validator=v.ge(1))
    every: int = attrs.field(default=1, validator=v.ge(1))


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "budget": BudgetConfig,
    "cues": CueOptions,
    "scheduler": SchedulerOptions,
    "attack": AttackOptions,
    "optim": OptimConfig,
    "eval": EvalConfig,
}


def _section(cls: type) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return _from_mapping(cls, value)
        return value

    return attrs.field(factory=cls, converter=convert, validator=v.instance_of(cls))


def _from_mapping(cls: type, values: Mapping[str, Any]) -> Any:
    known = {f.name for f in attrs.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return cls(**values)


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
    optim: OptimConfig = _section(OptimConfig)
    eval: EvalConfig = _section(EvalConfig)
    seed: int = attrs.field(default=0, validator=v.ge(0))
    device: str = attrs.field(default="auto", validator=_device)
    amp: str = attrs.field(default="auto", validator=_in_choices("auto", "off", "bf16", "fp16"))
    log_every: int = attrs.field(default=10, validator=v.ge(1))

    def __attrs_post_init__(self) -> None:
        weights = self.scheduler.weights
        if weights is not None and len(weights) != len(self.cues.names):
            raise ValueError(
                f"{len(weights)} scheduler weights for {len(self.cues.names)} cues "
                f"({','.join(self.cues.names)}); give one weight per cue"
            )

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
                updates[key] = attrs.evolve(getattr(self, key), **value)
            else:
                updates[key] = value
        return attrs.evolve(self, **updates)
