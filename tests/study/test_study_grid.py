"""``ades study`` end to end on a two-arm, two-seed toy grid of real CIFAR-10 (tiny sizes).

One study, three invocations: the reference arm alone (``--only``); the rest with
every training run killed mid-epoch (the trainer's test hook SIGKILLs the process
while it writes its 2nd training state), which the study reports and survives;
then again, which resumes the killed runs and skips the finished ones.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ades_cli.main import cli
from tests.kill_hook import KILL_HOOK_ENV, kill_during_checkpoint_env
from tests.study.fake_runs import write_study_file

pytestmark = pytest.mark.slow


def _launches(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("start ")]


def test_a_study_runs_its_grid_survives_a_kill_and_resumes_only_what_is_unfinished(tmp_path, cifar10_dir, monkeypatch):
    study = write_study_file(tmp_path / "toy.toml", tmp_path / "study", data_dir=cifar10_dir, parallel=2)
    runs = tmp_path / "study"
    runner = CliRunner()

    first = runner.invoke(cli, ["study", str(study), "--only", "pgd-at"])
    assert first.exit_code == 0, first.output
    assert sorted(_launches(first.output)) == [
        f"start pgd-at/seed{s}: {kind} (new)  log {runs / 'pgd-at' / f'seed{s}' / log}"
        for s in (0, 1) for kind, log in (("eval", "eval.log"), ("train", "train.log"))
    ]
    reference_models = {s: (runs / "pgd-at" / f"seed{s}" / "model.safetensors").stat().st_mtime_ns for s in (0, 1)}
    table = json.loads((runs / "study.json").read_text())
    assert table["arms"]["pgd-at"]["metrics"]["clean"]["n"] == 2
    assert table["arms"]["ades"]["metrics"]["clean"]["n"] == 0

    hooked = kill_during_checkpoint_env(2)  # the study's own subprocesses inherit it
    for name in ("PYTHONPATH", KILL_HOOK_ENV):
        monkeypatch.setenv(name, hooked[name])
    killed = runner.invoke(cli, ["study", str(study)])
    monkeypatch.delenv(KILL_HOOK_ENV)
    assert killed.exit_code == 1
    assert "skip pgd-at/seed0: finished" in killed.output and "skip pgd-at/seed1: finished" in killed.output
    for seed in (0, 1):
        log = runs / "ades" / f"seed{seed}" / "train.log"
        assert f"FAILED ades/seed{seed}: train exited with -9; see {log}" in killed.output
        assert (runs / "ades" / f"seed{seed}" / "checkpoint" / "state.json").is_file()
        assert not (runs / "ades" / f"seed{seed}" / "eval.json").exists()
    assert "Error: 2 of 2 runs failed" in killed.output
    assert (runs / "study.md").is_file()

    resumed = runner.invoke(cli, ["study", str(study)])
    assert resumed.exit_code == 0, resumed.output
    assert sorted(line.split("  log")[0] for line in _launches(resumed.output)) == [
        "start ades/seed0: eval (new)", "start ades/seed0: train (resume)",
        "start ades/seed1: eval (new)", "start ades/seed1: train (resume)",
    ]
    assert "(4 commands launched)" in resumed.output
    for seed in (0, 1):  # the finished reference runs were not touched
        assert (runs / "pgd-at" / f"seed{seed}" / "model.safetensors").stat().st_mtime_ns == reference_models[seed]
        assert "resuming" in (runs / "ades" / f"seed{seed}" / "train.log").read_text()

    table = json.loads((runs / "study.json").read_text())
    ades = table["arms"]["ades"]
    assert [r["status"] for r in ades["runs"]] == ["finished", "finished"]
    assert set(ades["metrics"]) == {"clean", "fgsm", "worst-case", "eps_mean", "eps_std", "seconds_per_epoch"}
    clean = ades["vs_reference"]["clean"]
    assert clean["n"] == 2 and clean["low"] <= clean["mean"] <= clean["high"]
    reports = {s: json.loads((runs / "ades" / f"seed{s}" / "eval.json").read_text()) for s in (0, 1)}
    assert ades["metrics"]["clean"]["values"] == [reports[0]["clean_acc"], reports[1]["clean_acc"]]
    assert reports[0]["torch_threads"] == 1  # 2 cores, 2 side by side
    assert (runs / "study.png").is_file()
