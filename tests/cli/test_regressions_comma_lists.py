"""Regression: a comma list with an empty item (``grad,,entropy``, ``grad,``) is refused in one line.

The empty item used to be dropped silently, so ``--cue grad,,entropy`` ran
with two cues as if nothing were wrong. Every comma-list option (and the
config's comma-list fields) now refuses it, naming the value and what is
accepted, like any other malformed list.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core import RunConfig
from ades_core.config import ConfigError, parse_comma_list

EMPTY_ITEM = "has an empty item"


def test_a_list_is_its_items_stripped_of_spaces():
    assert parse_comma_list("grad, entropy ,mcdropout") == ("grad", "entropy", "mcdropout")
    assert parse_comma_list("grad") == ("grad",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("grad,,entropy", "'grad,,entropy' has an empty item (item 2); give items separated by single commas, e.g. a,b,c"),
        ("grad,", "'grad,' has an empty item (item 2)"),
        (",grad", "',grad' has an empty item (item 1)"),
        ("grad, ,entropy", "'grad, ,entropy' has an empty item (item 2)"),
        ("", "expected a comma-separated list, got an empty value"),
        (" , ", "expected a comma-separated list, got an empty value"),
    ],
)  # fmt: skip
def test_an_empty_item_or_value_is_refused_in_one_line(value, message):
    with pytest.raises(ValueError) as info:
        parse_comma_list(value)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["run", "--cue", "grad,,entropy"], "--cue"),
        (["run", "--cue", "grad,"], "--cue"),
        (["run", "--defense", "static-des", "--static-weights", "1,,2"], "--static-weights"),
        (["bench", "--defenses", "pgd-at,,ades"], "--defenses"),
        (["bench", "--cue", "grad,,entropy"], "--cue"),
        (["bench", "--formats", "eager,,compile", "--formats-only"], "--formats"),
        (["eval", "--attack", "pgd20,,cw"], "--attack"),
        (["eval", "--eps-sweep", "4/255,,8/255"], "--eps-sweep"),
        (["eval", "--mean", "0.4,,0.5", "--std", "0.2,0.2,0.2"], "--mean"),
        (["eval", "--std", "0.2,0.2,", "--mean", "0.4,0.4,0.4"], "--std"),
    ],
)  # fmt: skip
def test_every_comma_list_option_refuses_an_empty_item(args, option):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert option in errors[0] and EMPTY_ITEM in errors[0], errors[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"cues": {"names": "grad,,entropy"}}, "cues.names"),
        ({"defense": "static-des", "cues": {"names": "grad,entropy"}, "scheduler": {"weights": "1,,2"}},
         "scheduler.weights"),
    ],
)  # fmt: skip
def test_config_comma_fields_refuse_an_empty_item(raw, field):
    with pytest.raises(ConfigError, match=f"^{field}: .*{EMPTY_ITEM}"):
        RunConfig.from_dict(raw)
