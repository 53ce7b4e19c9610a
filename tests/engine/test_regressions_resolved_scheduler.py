"""Regression: ``config.json`` names the scheduler the run used, also when the defense chose it.

``--defense ades`` without ``--scheduler`` trains with the defense's own
scheduler (mlp), but ``config.json`` recorded ``"scheduler": {"name": null}``.
The builder now writes the resolved name into the saved config. ``null`` in a
config still means "the defense's own", so a config that leaves the scheduler
to the defense and one that names that scheduler are the same run: the same
folder check, the same resume, and folders written before (``null``) resume.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core import RunConfig
from ades_core.engine.runfolder.model_files import read_run_config
from ades_core.engine.runfolder import ResumeConflictError, fixed_config, resume_config
from ades_core.engine.runfolder.state_files import load_training_state, save_training_state
from tests.cli.tiny_runs import TINY_RUN


def _config(out: Path) -> dict:
    return json.loads((out / "config.json").read_text())


def _error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture(scope="module")
def data_args(cifar10_dir) -> list[str]:
    return [*TINY_RUN, "--data-dir", str(cifar10_dir), "--train-subset", "8", "--test-subset", "4"]


@pytest.fixture(scope="module")
def ades_run(data_args, tmp_path_factory) -> Path:
    """A finished one-epoch ``--defense ades`` run (cue grad), no ``--scheduler`` given."""
    out = tmp_path_factory.mktemp("scheduler") / "run"
    result = CliRunner().invoke(cli, ["run", *data_args, "--defense", "ades", "--cue", "grad", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(("defense", "scheduler"), [("ades", "mlp"), ("static-des", "static"), ("pgd-at", "fixed")])
def test_a_config_without_a_scheduler_means_the_defense_s_own(defense, scheduler):
    config = RunConfig.from_dict({"defense": defense})
    assert config.scheduler.name is None  # what a user's config says is unchanged
    assert config.scheduler_name() == scheduler
    resolved = config.with_resolved_scheduler()
    assert resolved.scheduler.name == scheduler and resolved.evolve(scheduler={"name": None}) == config
    assert fixed_config(resolved) == fixed_config(config) == fixed_config(config.to_dict())


def test_config_json_the_model_file_and_the_state_name_the_resolved_scheduler(ades_run):
    config = _config(ades_run)
    assert config["scheduler"]["name"] == "mlp"
    assert config["resolved"]["scheduler"] == "mlp"
    assert load_training_state(ades_run)["config"]["scheduler.name"] == "mlp"
    assert read_run_config(ades_run / "model.safetensors")["scheduler"]["name"] == "mlp"


def test_the_same_options_again_are_the_same_run(ades_run, data_args):
    result = CliRunner().invoke(cli, ["run", *data_args, "--defense", "ades", "--cue", "grad", "--out", str(ades_run)])
    assert result.exit_code != 0
    assert "already holds this run (same config); pass --resume" in _error_line(result.output)


@pytest.mark.parametrize("again", [[], ["--scheduler", "mlp"]], ids=["not given", "named"])
def test_resume_keeps_the_named_scheduler(ades_run, again):
    result = CliRunner().invoke(cli, ["run", "--resume", str(ades_run), "--quiet", *again])
    assert result.exit_code == 0, result.output
    assert _config(ades_run)["scheduler"]["name"] == "mlp"


def test_resume_with_another_scheduler_is_refused(ades_run):
    result = CliRunner().invoke(cli, ["run", "--resume", str(ades_run), "--quiet", "--scheduler", "random"])
    assert "--scheduler 'random' conflicts with 'mlp'" in _error_line(result.output)


def test_a_folder_written_before_with_null_still_resumes(ades_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(ades_run, old)
    raw = _config(old)
    raw["scheduler"]["name"] = None  # config.json and the state as they were written before the fix
    (old / "config.json").write_text(json.dumps(raw))
    state = load_training_state(old)
    state["config"]["scheduler.name"] = None
    save_training_state(old, state)
    assert resume_config(old, {}).scheduler.name is None
    assert resume_config(old, {"scheduler": {"name": "mlp"}}).scheduler.name == "mlp"  # the same run
    with pytest.raises(ResumeConflictError, match="scheduler.name"):
        resume_config(old, {"scheduler": {"name": "random"}})
    result = CliRunner().invoke(cli, ["run", "--resume", str(old), "--quiet"])
    assert result.exit_code == 0, result.output
    assert _config(old)["scheduler"]["name"] == "mlp"
