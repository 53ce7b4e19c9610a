"""Typed registry metadata: one small frozen record per component family, its defaults stated once.

A registry (:class:`~ades_core.registry.Registry`) is made with the record of
its family; ``register(name, factory, description=..., paper=..., **fields)``
builds that record from the keywords, so an unknown keyword or a value of the
wrong type fails at registration, in one line naming the accepted fields.
Readers use typed attributes (``DEFENSES.entry(name).info.uses_cues``).

* defense: :class:`DefenseInfo`; attack: :class:`AttackInfo`;
* scheduler: :class:`SchedulerInfo`; scheduler objective: :class:`ObjectiveInfo`;
* dataset: :class:`DatasetInfo`; learning-rate schedule: :class:`LrScheduleInfo`;
* cue, attack loss, norm: :class:`NoInfo` (no fields).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from attrs import validators as v

if TYPE_CHECKING:
    from ades_core.config import RunConfig

DEFAULT_SCHEDULER = "mlp"
"""The scheduler of a defense that names none of its own (:attr:`DefenseInfo.scheduler`)."""

DEFAULT_SCHEDULER_LR = 1e-3
"""Adam learning rate of a learnable scheduler whose objective names none of its own."""


def _flag(default: bool) -> Any:
    return attrs.field(default=default, validator=v.instance_of(bool))


def _text() -> Any:
    return attrs.field(default="", validator=v.instance_of(str))


def _names(value: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """A tuple of names from a tuple, a list or one name (``"linf"``)."""
    return (value,) if isinstance(value, str) else tuple(value)


_NAMES = v.deep_iterable(v.instance_of(str), v.instance_of(tuple))


@attrs.frozen(kw_only=True)
class NoInfo:
    """The record of a family whose entries carry no fields (cues, attack losses, norms)."""


@attrs.frozen(kw_only=True)
class DefenseInfo:
    """What the builder and the config's rules need to know of a defense.

    ``scheduler``: the scheduler it uses unless the config names one.
    ``uses_cues``: whether cues are computed and handed to it.
    ``learnable``: it trains its scheduler, so the scheduler must be learnable.
    ``takes_loss``: it accepts ``DefenseOptions.loss`` (ce, trades, mart).
    ``loss``: the outer loss it fixes itself (trades, mart), or ``None``.
    ``awp``: it combines with adversarial weight perturbation (``--awp``).
    ``attack_bn``: its attack honours ``AttackOptions.bn`` (False: it runs its own).
    ``norms``: the norms it trains in (``None``: every one in :data:`~ades_core.norms.NORMS`),
    ``norm_note``: why not the others.
    ``budget_note``: how ``ades run`` describes its budget (empty: from ``uses_cues``).
    ``attack_note``: ``attack_note(config: RunConfig) -> str``, how ``ades run`` describes the
    training attack of a defense that does not run the configured PGD (``None``: "PGD-<steps>
    alpha <alpha>" from ``config.attack``).
    ``check``: ``check(config: RunConfig) -> None``, a rule of its own on the whole config,
    raising :class:`~ades_core.config.ConfigError`; run when the ``RunConfig`` is built.
    """

    scheduler: str = attrs.field(default=DEFAULT_SCHEDULER, validator=v.instance_of(str))
    uses_cues: bool = _flag(True)
    learnable: bool = _flag(False)
    takes_loss: bool = _flag(False)
    loss: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    awp: bool = _flag(False)
    attack_bn: bool = _flag(True)
    norms: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_names), validator=v.optional(_NAMES)
    )
    norm_note: str = _text()
    budget_note: str = _text()
    attack_note: Callable[[RunConfig], str] | None = attrs.field(default=None, validator=v.optional(v.is_callable()))
    check: Callable[[RunConfig], None] | None = attrs.field(default=None, validator=v.optional(v.is_callable()))


@attrs.frozen(kw_only=True)
class AttackInfo:
    """``norms``: the norms the attack runs in; ``training``: it can generate training examples
    (False: evaluation only, e.g. AutoAttack)."""

    norms: tuple[str, ...] = attrs.field(default=("linf",), converter=_names, validator=_NAMES)
    training: bool = _flag(True)


@attrs.frozen(kw_only=True)
class SchedulerInfo:
    """``learnable``: the builder trains the scheduler's parameters with an objective and Adam.
    (A scheduler reduces over the batch through ``Cues.reduction``, so needs no factory keyword.)"""

    learnable: bool = _flag(False)


@attrs.frozen(kw_only=True)
class ObjectiveInfo:
    """``lr``: the Adam learning rate of a scheduler trained by this objective, unless
    ``SchedulerOptions.lr`` names one. ``fits_target``: it learns from its own fit of a
    measured target (a :class:`~ades_core.protocols.TargetFitting`), not from the envelope
    gradient, so ``scheduler.grad_norm`` does not apply to it (a config rule).
    ``reduces_batch``: it takes statistics over the batch, so its factory takes ``reduction=``
    (a :class:`~ades_core.batch_reduction.BatchReduction`: the global batch under ``torchrun``)
    from the builder; a factory without it is not passed one."""

    lr: float = attrs.field(default=DEFAULT_SCHEDULER_LR, converter=float, validator=v.gt(0.0))
    fits_target: bool = _flag(False)
    reduces_batch: bool = _flag(False)


@attrs.frozen(kw_only=True)
class DatasetInfo:
    """``test_split``: ``loader(request: DataRequest) -> ImageTensors``, the test split alone
    (reading no training data), used by evaluation; ``None``: the factory loads everything."""

    test_split: Callable[..., Any] | None = attrs.field(default=None, validator=v.optional(v.is_callable()))


@attrs.frozen(kw_only=True)
class LrScheduleInfo:
    """``per_iteration``: stepped after every optimiser step (True) or after every epoch (False)."""

    per_iteration: bool = _flag(False)


__all__ = [
    "DEFAULT_SCHEDULER",
    "DEFAULT_SCHEDULER_LR",
    "AttackInfo",
    "DatasetInfo",
    "DefenseInfo",
    "LrScheduleInfo",
    "NoInfo",
    "ObjectiveInfo",
    "SchedulerInfo",
]
