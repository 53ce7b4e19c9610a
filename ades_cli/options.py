"""Click parameter types and the option -> config mapping shared by commands."""

from __future__ import annotations

from typing import Any

import click

from ades_core.config import format_eps, parse_comma_list, parse_lam, parse_non_negative_budget


class EpsType(click.ParamType):
    """A budget >= 0: ``8/255`` or ``0.0314`` (L-inf pixel scale), ``0.5`` (L2 radius).

    Its range depends on ``--norm``, which the command checks once both are
    known (the config for ``ades run``, the evaluation for ``ades eval``).
    """

    name = "eps"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_non_negative_budget(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class LamType(EpsType):
    """The width of the adaptive budget range, ``lam``: a budget, and never negative."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float) and value >= 0:
            return value
        try:
            return parse_lam(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class CommaList(click.ParamType):
    """``a,b,c`` -> ``("a", "b", "c")``; an empty value or an empty item (``a,,b``) is refused."""

    name = "list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_comma_list(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


EPS = EpsType()
LAM = LamType()
COMMA_LIST = CommaList()

# option name -> (config section or None for top level, field name)
RUN_OPTION_FIELDS: dict[str, tuple[str | None, str]] = {
    "defense": (None, "defense"),
    "seed": (None, "seed"),
    "device": (None, "device"),
    "amp": (None, "amp"),
    "compile": (None, "compile"),
    "sync_bn": (None, "sync_bn"),
    "log_every": (None, "log_every"),
    "checkpoint_every": (None, "checkpoint_every"),
    "on_nonfinite": (None, "on_nonfinite"),
    "norm": ("attack", "norm"),
    "cue": ("cues", "names"),
    "mc_samples": ("cues", "mc_samples"),
    "mc_mode": ("cues", "mc_mode"),
    "cue_point": ("cues", "point"),
    "mc_dropout_p": ("cues", "mc_dropout_p"),
    "backbone": ("model", "backbone"),
    "drop_rate": ("model", "drop_rate"),
    "dataset": ("data", "dataset"),
    "data_dir": ("data", "data_dir"),
    "batch_size": ("data", "batch_size"),
    "train_subset": ("data", "train_subset"),
    "test_subset": ("data", "test_subset"),
    "image_size": ("data", "image_size"),
    "download": ("data", "download"),
    "augment": ("data", "augment"),
    "epochs": ("optim", "epochs"),
    "lr": ("optim", "lr"),
    "momentum": ("optim", "momentum"),
    "weight_decay": ("optim", "weight_decay"),
    "eps": ("budget", "eps"),
    "eps_min": ("budget", "eps_min"),
    "lam": ("budget", "lam"),
    "steps": ("attack", "steps"),
    "alpha": ("attack", "alpha"),
    "attack_loss": ("attack", "loss"),
    "loss": ("defense_options", "loss"),
    "beta": ("defense_options", "beta"),
    "awp": ("defense_options", "awp"),
    "awp_gamma": ("defense_options", "awp_gamma"),
    "awp_warmup": ("defense_options", "awp_warmup"),
    "fast_alpha_ratio": ("defense_options", "fast_alpha_ratio"),
    "scheduler": ("scheduler", "name"),
    "scheduler_objective": ("scheduler", "objective"),
    "scheduler_lr": ("scheduler", "lr"),
    "scheduler_hidden": ("scheduler", "hidden"),
    "static_weights": ("scheduler", "weights"),
    "scheduler_init_std": ("scheduler", "init_std"),
    "scheduler_grad_norm": ("scheduler", "grad_norm"),
    "scheduler_target_loss": ("scheduler", "target_loss"),
    "scheduler_penalty": ("scheduler", "penalty"),
    "scheduler_random_std": ("scheduler", "random_std"),
    "scheduler_reverse": ("scheduler", "reverse"),
    "scheduler_shuffle": ("scheduler", "shuffle"),
    "scheduler_lookahead_every": ("scheduler", "lookahead_every"),
    "scheduler_lookahead_lr": ("scheduler", "lookahead_lr"),
    "eval_eps": ("eval", "eps"),
    "eval_steps": ("eval", "steps"),
    "eval_every": ("eval", "every"),
    "eval_batch_size": ("eval", "batch_size"),
    "replays": ("defense_options", "replays"),
    "mma_max_eps": ("defense_options", "mma_max_eps"),
    "mma_min_eps": ("defense_options", "mma_min_eps"),
    "mma_clean_weight": ("defense_options", "mma_clean_weight"),
    "mma_search_steps": ("defense_options", "mma_search_steps"),
    "iaat_warmup": ("defense_options", "iaat_warmup"),
    "iaat_gamma": ("defense_options", "iaat_gamma"),
    "iaat_beta": ("defense_options", "iaat_beta"),
    "iaat_max_eps": ("defense_options", "iaat_max_eps"),
    "cat_ramp": ("defense_options", "cat_ramp"),
    "cat_steps": ("defense_options", "cat_steps"),
    "mma_margin": ("defense_options", "mma_margin"),
    "attack_bn": ("attack", "bn"),
    "lr_schedule": ("optim", "schedule"),
    "lr_warmup": ("optim", "warmup"),
    "val_split": ("val", "split"),
    "early_stop_drop": ("val", "early_stop_drop"),
    "ema": ("ema", "decay"),
    "ema_warmup": ("ema", "warmup"),
    "ema_buffers": ("ema", "buffers"),
    "tensorboard": ("logging", "tensorboard"),
}


def option_for_field(field: str) -> str | None:
    """The ``ades run`` option that sets config field ``field`` (``"attack.steps"`` -> ``"--steps"``)."""
    for option, (section, name) in RUN_OPTION_FIELDS.items():
        if field == (name if section is None else f"{section}.{name}"):
            return "--" + option.replace("_", "-")
    return None


def overrides_from_options(options: dict[str, Any]) -> dict[str, Any]:
    """The nested config dict of the options that were given (``None`` = not given)."""
    nested: dict[str, Any] = {}
    for option, value in options.items():
        if value is None or option not in RUN_OPTION_FIELDS:
            continue
        section, field = RUN_OPTION_FIELDS[option]
        if section is None:
            nested[field] = value
        else:
            nested.setdefault(section, {})[field] = value
    return nested


__all__ = [
    "COMMA_LIST",
    "EPS",
    "LAM",
    "RUN_OPTION_FIELDS",
    "format_eps",
    "option_for_field",
    "overrides_from_options",
]
