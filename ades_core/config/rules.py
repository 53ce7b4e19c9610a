"""The rules across a run's config sections, checked when the :class:`~ades_core.config.RunConfig` is built.

Every rule here needs only the config and the registries' typed records
(:mod:`ades_core.registry_info`), so a bad combination fails before any data
is loaded or a model built, for built-in and plugin components alike: budgets
in range for the norm, the defense and the attack able to train in it, one
scheduler weight per cue, a training attack, options a defense would ignore
(``loss``, ``awp``, ``attack.bn``), an attack loss TRADES's KL inner attack
would ignore, a learnable scheduler where the defense or a control needs one,
``grad_norm`` with an objective that fits a target, the early-stop rules, and the defense's own ``check``.
Each raises :class:`~ades_core.config_fields.ConfigError` naming the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ades_core.config.components import AttackOptions
from ades_core.config.defense_options import KL_INNER_LOSSES, DefenseOptions
from ades_core.config_fields import ConfigError, _training_attack, format_eps
from ades_core.norms import NORMS
from ades_core.registries import ATTACKS, DEFENSES, SCHEDULER_OBJECTIVES, SCHEDULERS
from ades_core.training_config import check_training_rules

if TYPE_CHECKING:
    from ades_core.config.run import RunConfig


def check_run(config: RunConfig) -> None:
    """Every cross-field rule of ``config``, in order; the first broken one raises."""
    check_budgets(config)
    weights = config.scheduler.weights
    if weights is not None and len(weights) != len(config.cues.names):
        raise ConfigError(
            "scheduler.weights",
            f"{len(weights)} scheduler weights for {len(config.cues.names)} cues "
            f"({','.join(config.cues.names)}); give one weight per cue",
        )
    _training_attack(config, attrs.fields(AttackOptions).name, config.attack.name)
    info = DEFENSES.entry(config.defense).info
    if config.attack.bn != "eval" and not info.attack_bn:
        raise ConfigError(
            "attack.bn",
            f"defense {config.defense!r} runs its own attack and ignores the BN mode; "
            "--attack-bn train applies to PGD-based defenses (pgd-at, trades, mart, static-des, ades, fast-at, cat)",
        )
    check_defense_options(config.defense, config.defense_options)
    check_inner_attack_loss(config)
    check_scheduler(config)
    check_training_rules(config.val, config.eval.every)
    if info.check is not None:
        info.check(config)


def check_budgets(config: RunConfig) -> None:
    """Every budget within its norm's range, and the defense and attack able to train in the norm.

    Raises:
        ConfigError: one line naming the field, its value and the range of
            the norm (L-inf [0, 1]; L2 [0, inf), the image size is checked by
            the builder), or the defense / attack without this norm.
    """
    threat = NORMS.get(config.norm)
    for field, value in config.budget_fields().items():
        if value is None:
            continue
        try:
            threat.check_budget(value, threat.format(value))
        except ValueError as exc:
            raise ConfigError(field, f"{exc} for --norm {config.norm}") from None
    if config.budget.eps_max > threat.budget_limit() + 1e-12:
        raise ConfigError(
            "budget.lam",
            f"eps_min + lam = {format_eps(config.budget.eps_max)} exceeds 1 (pixel scale); "
            "lower --eps-min or --lam",
        )
    defense = DEFENSES.entry(config.defense).info
    norms = defense.norms if defense.norms is not None else tuple(NORMS.names())
    if config.norm not in norms:
        why = defense.norm_note
        raise ConfigError(
            "attack.norm",
            f"defense {config.defense!r} trains in {', '.join(norms)} only, not {config.norm}"
            + (f": {why}" if why else ""),
        )
    attack_norms = ATTACKS.entry(config.attack.name).info.norms
    if config.norm not in attack_norms:
        raise ConfigError(
            "attack.name",
            f"attack {config.attack.name!r} supports norm(s) {', '.join(attack_norms)}, not {config.norm}",
        )


def check_defense_options(defense: str, options: DefenseOptions) -> None:
    """Refuse settings that ``defense`` would ignore, from its :class:`~ades_core.registry_info.DefenseInfo`.

    ``loss`` other than ``ce`` needs a defense with ``takes_loss`` (or one
    whose own ``loss`` it is); ``awp`` needs ``awp``.

    Raises:
        ConfigError: one line naming the field and the defenses that accept it.
    """
    info = DEFENSES.entry(defense).info
    own_loss = info.loss
    if options.loss != "ce" and options.loss != own_loss and not info.takes_loss:
        takers = [n for n in DEFENSES.names() if DEFENSES.entry(n).info.takes_loss]
        has_own = f" (it trains on its own loss, {own_loss})" if own_loss else ""
        raise ConfigError(
            "defense_options.loss",
            f"loss {options.loss!r} does not apply to defense {defense!r}{has_own}; "
            f"it applies to: {', '.join(takers)}",
        )
    if options.awp and not info.awp:
        takers = [n for n in DEFENSES.names() if DEFENSES.entry(n).info.awp]
        raise ConfigError(
            "defense_options.awp",
            f"AWP does not combine with defense {defense!r}; it combines with: {', '.join(takers)}",
        )


def outer_loss(config: RunConfig) -> str:
    """The outer training loss the defense of ``config`` trains on: its own (trades, mart) or
    ``defense_options.loss``."""
    return DEFENSES.entry(config.defense).info.loss or config.defense_options.loss


def kl_inner_attack_loss(loss: str, attack_loss: str) -> ConfigError:
    """The refusal of an attack loss that the KL-maximising inner attack of ``loss`` would ignore."""
    return ConfigError(
        "attack.loss",
        f"the {loss} inner attack maximises KL(p(x) || p(x')), so the attack loss "
        f"does not apply; leave it at ce, got {attack_loss!r}",
    )


def check_inner_attack_loss(config: RunConfig) -> None:
    """An outer loss whose inner attack maximises a KL (TRADES) needs the attack loss ``ce``.

    Raises:
        ConfigError: on ``attack.loss``.
    """
    loss = outer_loss(config)
    if loss in KL_INNER_LOSSES and config.attack.loss != "ce":
        raise kl_inner_attack_loss(loss, config.attack.loss)


def grad_norm_with_target_fit() -> ConfigError:
    """The refusal of ``scheduler.grad_norm`` with an objective that fits a measured target."""
    return ConfigError(
        "scheduler.grad_norm",
        "rescales the envelope gradient dL/d eps; the target objective learns from its own fit "
        "loss, not from it (leave --scheduler-grad-norm at none)",
    )


def check_scheduler(config: RunConfig) -> None:
    """A learnable scheduler where the defense trains one, and where a control (``reverse``,
    ``shuffle``) perturbs a learned allocation; no ``grad_norm`` for an objective that learns
    from its own fit (``fits_target``), not from the envelope gradient.

    Raises:
        ConfigError: on ``scheduler.name`` (the scheduler the run resolves to is the one at
            fault), or on ``scheduler.grad_norm``.
    """
    scheduler_name = config.scheduler_name()
    learnable = SCHEDULERS.entry(scheduler_name).info.learnable
    if DEFENSES.entry(config.defense).info.learnable and not learnable:
        raise ConfigError(
            "scheduler.name",
            f"defense {config.defense!r} needs a learnable scheduler, got {scheduler_name!r}; "
            f"learnable: {', '.join(n for n in SCHEDULERS if SCHEDULERS.entry(n).info.learnable)}",
        )
    for control, flag in ((config.scheduler.reverse, "reverse"), (config.scheduler.shuffle, "shuffle")):
        if control and not learnable:
            raise ConfigError(
                "scheduler.name",
                f"--scheduler-{flag} controls a learned allocation; scheduler {scheduler_name!r} is not "
                "learnable (use --scheduler mlp)",
            )
    objective = SCHEDULER_OBJECTIVES.entry(config.scheduler.objective).info
    if learnable and config.scheduler.grad_norm != "none" and objective.fits_target:
        raise grad_norm_with_target_fit()


__all__ = [
    "check_budgets",
    "check_defense_options",
    "check_inner_attack_loss",
    "check_run",
    "check_scheduler",
    "grad_norm_with_target_fit",
    "kl_inner_attack_loss",
    "outer_loss",
]
