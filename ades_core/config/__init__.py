"""Typed, validated run configuration (attrs, frozen) and budget parsing: the public names.

Every field is checked when a config is constructed, so a bad value fails
before anything runs or is written. Budgets are radii in the run's norm
(``attack.norm``, :mod:`ades_core.norms`): L-inf in [0, 1] pixel scale, given
as ``"8/255"`` or ``0.0314``; L2 a Euclidean radius in pixel space such as
``0.5``. A section checks that a budget is a number >= 0; the run checks its
range for the norm (:meth:`RunConfig.check_budgets`), and every rule across
sections runs when the ``RunConfig`` is built (:mod:`ades_core.config.rules`).
Names of components are checked against their registries (the built-ins and
any loaded plugins).

``RunConfig`` defaults are the paper's setting (WRN-34-10, 100 epochs, PGD-10
training with alpha 2/255, SGD 0.1 / 0.9 / 5e-4, decay x0.1 at 75% and 90%);
presets in :mod:`ades_core.presets` override them.

Modules: :mod:`~ades_core.config.sections` (data, model, budgets, optimiser,
held-out check), :mod:`~ades_core.config.components` (cue, scheduler and
attack options), :mod:`~ades_core.config.defense_options`,
:mod:`~ades_core.config.rules` (the rules across sections),
:mod:`~ades_core.config.run` (:class:`RunConfig`); field types and parsing in
:mod:`ades_core.config_fields`, the training sections in
:mod:`ades_core.training_config`.
"""

from __future__ import annotations

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
from ades_core.config.components import (
    AttackOptions,
    CueOptions,
    SchedulerOptions,
    default_alpha,
)
from ades_core.config.defense_options import MMA_DEFAULT_MAX_EPS, TRAINING_LOSSES, DefenseOptions
from ades_core.config.rules import check_budgets, check_defense_options, check_run
from ades_core.config.run import ON_NONFINITE, RunConfig, default_scheduler
from ades_core.config.sections import (
    DEFAULT_EVAL_EPS,
    BudgetConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
)
from ades_core.registry_info import DEFAULT_SCHEDULER, DEFAULT_SCHEDULER_LR
from ades_core.training_config import EmaConfig, LoggingConfig, ValidationConfig, check_training_rules

__all__ = [
    "DEFAULT_EVAL_EPS",
    "DEFAULT_SCHEDULER",
    "DEFAULT_SCHEDULER_LR",
    "EPS_FIELD",
    "MMA_DEFAULT_MAX_EPS",
    "ON_NONFINITE",
    "OPTIONAL_EPS_FIELD",
    "TRAINING_LOSSES",
    "AttackOptions",
    "BudgetConfig",
    "ConfigError",
    "CueOptions",
    "DataConfig",
    "DefenseOptions",
    "EmaConfig",
    "EvalConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SchedulerOptions",
    "UnknownNameError",
    "ValidationConfig",
    "check_budgets",
    "check_defense_options",
    "check_run",
    "check_training_rules",
    "default_alpha",
    "default_scheduler",
    "format_eps",
    "parse_budget",
    "parse_budget_number",
    "parse_comma_list",
    "parse_eps",
    "parse_lam",
    "parse_non_negative_budget",
]
