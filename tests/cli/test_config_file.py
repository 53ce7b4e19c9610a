"""ades run --config FILE (TOML or JSON) and --print-config."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ades_cli.main import cli
from ades_cli.train import config_from_options


def _print(*args: str) -> str:
    result = CliRunner().invoke(cli, ["run", *args, "--print-config"])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_config_file_round_trips_with_print_config(tmp_path):
    options = ["--preset", "fast-at", "--lr", "0.05", "--ema", "0.999", "--val-split", "500"]
    text = _print(*options)
    file = tmp_path / "run.toml"
    file.write_text(text)
    again = config_from_options(None, {}, file)
    assert again == config_from_options("fast-at", {"lr": 0.05, "ema": 0.999, "val_split": 500})
    assert _print("--config", str(file)).splitlines()[1:] == text.splitlines()[1:]  # the header names the source


def test_a_json_config_file_works_as_well(tmp_path):
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"defense": "pgd-at", "optim": {"lr": 0.02, "schedule": "cosine"}}))
    config = config_from_options(None, {}, file)
    assert (config.defense, config.optim.lr, config.optim.schedule) == ("pgd-at", 0.02, "cosine")


def test_explicit_options_override_the_file_and_the_file_overrides_the_preset(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text('[optim]\nepochs = 7\nlr = 0.3\n')
    config = config_from_options("fast-at", {"lr": 0.01}, file)
    assert config.optim.epochs == 7  # file over preset (15)
    assert config.optim.lr == 0.01  # option over file
    assert config.optim.schedule == "cyclic"  # the preset where neither speaks


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("run.yaml", "a: 1", "expected a .toml or .json file"),
        ("run.toml", "[optim\n", "not valid TOML"),
        ("run.toml", "[optim]\nspeed = 1\n", "unknown OptimConfig field"),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path, name, content, message):
    file = tmp_path / name
    file.write_text(content)
    result = CliRunner().invoke(cli, ["run", "--config", str(file), "--print-config"])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
