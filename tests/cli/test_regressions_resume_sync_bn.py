"""Regression: ``--sync-bn`` is part of a run's config on ``--resume`` like every other option.

``ades run`` took ``--sync-bn`` out of the options before they were mapped to
the config, so on ``--resume`` the flag was dropped without a word: a resumed
run never compared it with the run's ``config.json``. Now the run folder's
setting is restored on resume, the same value may be given again, and a
different one is refused in one line, as for any option that changes what is
computed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core.engine.runfolder.state_files import load_training_state
from tests.cli.tiny_runs import TINY_RUN


def _run(*args: str):
    return CliRunner().invoke(cli, ["run", *args])


def _sync_bn(out: Path) -> bool:
    return json.loads((out / "config.json").read_text())["sync_bn"]


def _error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture(scope="module")
def runs(cifar10_dir, tmp_path_factory) -> dict[bool, Path]:
    """Two finished one-epoch runs on 8 CIFAR-10 images: ``{sync_bn: run folder}``."""
    root = tmp_path_factory.mktemp("sync_bn")
    folders = {}
    for sync_bn in (True, False):
        out = root / f"sync-{sync_bn}"
        args = [*TINY_RUN, "--data-dir", str(cifar10_dir), "--train-subset", "8", "--test-subset", "4",
                "--sync-bn" if sync_bn else "--no-sync-bn", "--out", str(out)]
        result = _run(*args)
        assert result.exit_code == 0, result.output
        folders[sync_bn] = out
    return folders


def test_the_run_records_sync_bn_in_its_config_and_its_state(runs):
    for sync_bn, out in runs.items():
        assert _sync_bn(out) is sync_bn
        assert load_training_state(out)["config"]["sync_bn"] is sync_bn


@pytest.mark.parametrize("again", [[], ["--sync-bn"]], ids=["not given", "given again"])
def test_resume_restores_sync_bn_from_the_run_folder(runs, again):
    out = runs[True]
    result = _run("--resume", str(out), "--quiet", *again)
    assert result.exit_code == 0, result.output
    assert _sync_bn(out) is True  # config.json is rewritten on resume: the setting is kept


@pytest.mark.parametrize(("stored", "flag"), [(True, "--no-sync-bn"), (False, "--sync-bn")])
def test_resume_with_a_different_sync_bn_is_refused_in_one_line(runs, stored, flag):
    out = runs[stored]
    before = (out / "config.json").read_bytes()
    result = _run("--resume", str(out), "--quiet", flag)
    assert result.exit_code != 0
    line = _error_line(result.output)
    assert line.startswith(f"Error: --sync-bn {not stored!r} conflicts with {stored!r} in {out}/config.json")
    assert "on --resume only --device" in line
    assert (out / "config.json").read_bytes() == before
