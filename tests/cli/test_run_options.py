"""``ades run``'s config options are generated from the config fields' metadata: one option per
field that declares one, each landing in its field, with the names and flag forms they always had."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest

from ades_cli.options import RUN_OPTION_FIELDS, RUN_OPTIONS, RunOption, option_for_field, run_options
from ades_cli.train import config_from_options, run
from ades_core.cli_metadata import CliOption, cli, cli_option
from ades_core.config import RunConfig
from ades_core.config.run import SECTIONS

HAND_WRITTEN = {"--preset", "--config", "--print-config", "--out", "--overwrite", "--resume", "--quiet"}
"""Options of ``ades run`` that are not config fields."""

NAMES = """
--alpha --amp --attack-bn --attack-loss --augment --awp --awp-gamma --awp-warmup --backbone --batch-size
--beta --cat-ramp --cat-steps --checkpoint-every --compile --cue --cue-point --data-dir --dataset --defense
--device --download --drop-rate --early-stop-drop --ema --ema-buffers --ema-warmup --epochs --eps --eps-min
--eval-batch-size --eval-eps --eval-every --eval-steps --fast-alpha-ratio --iaat-beta --iaat-gamma
--iaat-max-eps --iaat-warmup --image-size --lam --log-every --loss --lr --lr-schedule --lr-warmup
--mc-dropout-p --mc-mode --mc-samples --mma-clean-weight --mma-margin --mma-max-eps --mma-min-eps
--mma-search-steps --momentum --norm --on-nonfinite --replays --scheduler --scheduler-grad-norm
--scheduler-hidden --scheduler-init-std --scheduler-lookahead-every --scheduler-lookahead-lr --scheduler-lr
--scheduler-objective --scheduler-penalty --scheduler-random-std --scheduler-reverse --scheduler-shuffle
--scheduler-target-loss --seed --static-weights --steps --sync-bn --tensorboard --test-subset --train-subset
--val-split --weight-decay
""".split()
"""Every config option ``ades run`` had when its options were written out by hand."""

TEXT_VALUES = {
    "defense": "pgd-at", "dataset": "imagefolder", "backbone": "ades_cnn_small", "device": "cpu",
    "scheduler": "mlp", "scheduler_objective": "target", "attack_loss": "cw", "loss": "trades",
    "lr_schedule": "cosine", "static_weights": "1,2,3", "cue": "grad,entropy", "data_dir": "some/data-folder",
}  # fmt: skip
"""A valid value, other than the default, of each option whose value is free text."""

COMPANIONS = {
    "early_stop_drop": ["--val-split", "10"],
    "scheduler_grad_norm": ["--scheduler-objective", "allocate-min"],  # the default target fit refuses rms
}
"""Options a rule across fields requires beside an option (an early stop needs a validation split)."""


def _fields_with_cli_metadata() -> list[str]:
    paths = []
    for top in attrs.fields(RunConfig):
        section = SECTIONS.get(top.name)
        for field in attrs.fields(section) if section else (top,):
            if cli_option(field) is not None:
                paths.append(field.name if section is None else f"{top.name}.{field.name}")
    return paths


def test_every_field_with_cli_metadata_has_exactly_one_option():
    params = [p for p in run.params if not HAND_WRITTEN & set(p.opts)]
    assert sorted(o.path for o in RUN_OPTIONS) == sorted(_fields_with_cli_metadata())
    assert sorted(p.name for p in params) == sorted(RUN_OPTION_FIELDS)  # one click parameter each
    assert len({p.name for p in run.params}) == len(run.params)


def test_the_option_names_and_flag_forms_are_the_ones_ades_run_always_had():
    params = {p.opts[0]: p for p in run.params if not HAND_WRITTEN & set(p.opts)}
    assert sorted(params) == sorted(NAMES)
    for option in RUN_OPTIONS:
        param = params[f"--{option.name}"]
        if option.field.type == "bool":
            assert param.secondary_opts == [f"--no-{option.name}"], option.name

    not_given = run.make_context("run", []).params  # every option defaults to "not given", so presets apply
    assert all(not_given[param] is None for param in RUN_OPTION_FIELDS)


def test_fields_without_cli_metadata_have_no_option():
    assert option_for_field("attack.random_start") is None and option_for_field("eval.alpha") is None
    assert option_for_field("attack.name") is None and option_for_field("optim.milestones") is None


def test_option_for_field_names_the_option_that_sets_a_field():
    assert option_for_field("attack.steps") == "--steps"
    assert option_for_field("cues.names") == "--cue"
    assert option_for_field("defense_options.awp") == "--awp"
    assert option_for_field("ema.decay") == "--ema"
    assert option_for_field("seed") == "--seed"
    assert RUN_OPTION_FIELDS["scheduler_reverse"] == ("scheduler", "reverse")


def _sample(option: RunOption) -> tuple[list[str], object]:
    """A command line setting ``option`` to a valid value other than its default, and that value."""
    field, facts = option.field, option.facts
    default = field.default if not isinstance(field.default, attrs.Factory) else None  # type: ignore[arg-type]
    if field.type == "bool":
        return ([f"--no-{option.name}"] if default else [f"--{option.name}"]), not default
    if facts.choices:
        value = [c for c in facts.choices if c != default][-1]
        return [f"--{option.name}", value], value
    if option.param in TEXT_VALUES:
        text = TEXT_VALUES[option.param]
        expected = {
            "static_weights": (1.0, 2.0, 3.0), "cue": ("grad", "entropy"), "data_dir": Path(text)
        }.get(option.param, text)  # fmt: skip
        return [f"--{option.name}", text], expected
    if facts.kind in ("eps", "lam"):
        return [f"--{option.name}", "3/255"], 3 / 255
    if field.type.startswith("int"):
        value = (default or 2) + 1
        return [f"--{option.name}", str(value)], value
    value = 0.5 if not default else default / 2
    return [f"--{option.name}", repr(value)], value


@pytest.mark.parametrize("option", RUN_OPTIONS, ids=[o.name for o in RUN_OPTIONS])
def test_an_option_value_lands_in_its_field(option):
    args, expected = _sample(option)
    context = run.make_context("run", [*args, *COMPANIONS.get(option.param, [])])
    config = config_from_options(None, {k: v for k, v in context.params.items() if k in RUN_OPTION_FIELDS})
    holder = config if option.section is None else getattr(config, option.section)
    value = getattr(holder, option.field.name)
    assert value != (option.field.default if option.field.default is not attrs.NOTHING else object())
    if isinstance(expected, float):
        assert math.isclose(value, expected), (args, value)
    else:
        assert value == expected, (args, value)


def test_cli_metadata_is_checked_when_a_field_declares_it():
    assert cli("Help.", name="x")["ades.cli"] == CliOption(help="Help.", name="x")
    with pytest.raises(ValueError, match="kind"):
        cli("Help.", kind="budget")


def test_run_options_reads_the_config_as_it_is():
    assert [o.path for o in run_options()] == [o.path for o in RUN_OPTIONS]
