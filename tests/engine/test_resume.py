"""Kill a real run with SIGKILL (mid-epoch, and mid-checkpoint-write), resume it, get the same run.

The reference is an uninterrupted run with the same seed. On the CPU with the
same number of torch threads the resumed run is *bitwise* the reference: the
weights, the per-epoch metrics (all but the wall-clock seconds) and the
defense's learned scheduler, because the state restores every generator, the
optimisers, the LR schedule, the epoch's running sums and the loader position.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ades_cli.main import cli
from ades_core.engine.runfolder.state_files import load_training_state, state_folder
from tests.kill_hook import kill_after_checkpoint_env, kill_during_checkpoint_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 4  # 128 images in batches of 32


def _args(data_dir: Path, out: Path) -> list[str]:
    return [
        "run", "--defense", "ades", "--cue", "grad,entropy", "--backbone", "ades_cnn_small",
        "--dataset", "imagefolder", "--data-dir", str(data_dir), "--train-subset", "128",
        "--test-subset", "32", "--batch-size", "32", "--epochs", "2", "--steps", "1",
        "--eval-steps", "1", "--seed", "1", "--device", "cpu", "--checkpoint-every", "1",
        "--quiet", "--out", str(out),
    ]


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ades_cli", *args],
        cwd=REPO,
        env=dict(os.environ) if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _position(out: Path) -> dict | None:
    try:
        return json.loads((state_folder(out) / "state.json").read_text())["state"]["position"]
    except (OSError, ValueError, KeyError):
        return None


def _resume(out: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--resume", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "done:" in result.output


def _assert_same_run(out: Path, reference: Path) -> None:
    for name in ("model.safetensors", "defense.safetensors"):
        got, want = load_file(str(out / name)), load_file(str(reference / name))
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), f"{name}:{key} differs"
    got = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        drop = {"train_seconds", "eval_seconds"}
        assert {k: v for k, v in g.items() if k not in drop} == {k: v for k, v in w.items() if k not in drop}


@pytest.fixture(scope="module")
def reference(cifar10_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    result = CliRunner().invoke(cli, _args(cifar10_dir, out))
    assert result.exit_code == 0, result.output
    return out


def test_sigkill_in_the_middle_of_an_epoch_then_resume_is_the_same_run(cifar10_dir, tmp_path, reference):
    out = tmp_path / "run"
    # killed right after the state of epoch 1 step 2 is in place (--checkpoint-every 1): at a known
    # step, however slow the machine, as a kill anywhere in step 3 would leave it
    process = _start(_args(cifar10_dir, out), kill_after_checkpoint_env(2))
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == -signal.SIGKILL, output
    killed_at = _position(out)
    assert killed_at == {"epoch": 0, "step": 2, "global_step": 2}, killed_at
    metrics = out / "metrics.jsonl"
    finished = metrics.read_text().splitlines() if metrics.exists() else []
    assert len(finished) >= killed_at["epoch"]  # a line past the state is dropped on resume

    _resume(out)
    _assert_same_run(out, reference)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(cifar10_dir, tmp_path, reference):
    out = tmp_path / "run"
    # saves: epoch 1 steps 1-3, end of epoch 1, epoch 2 step 1, then the 6th (epoch 2 step 2) dies
    process = _start(_args(cifar10_dir, out), kill_during_checkpoint_env(6))
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == -signal.SIGKILL, output
    folder = state_folder(out)
    assert [p.name for p in folder.glob(".state.json.*.tmp")], "the half-written state.json is left behind"
    assert len(list(folder.glob("tensors-*.safetensors"))) == 2  # the current pair's and the orphan
    assert _position(out) == {"epoch": 1, "step": 1, "global_step": STEPS_PER_EPOCH + 1}
    assert load_training_state(out) is not None  # the previous pair is whole and verified

    _resume(out)
    _assert_same_run(out, reference)
    assert sorted(p.name for p in folder.iterdir())[0] == "state.json"
    assert len(list(folder.iterdir())) == 2  # leftovers cleaned by the next save


def test_resuming_a_finished_run_does_nothing_and_drops_lines_past_the_state(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = (out / "metrics.jsonl").read_bytes()
    with open(out / "metrics.jsonl", "a") as handle:  # as if killed after a line but before its state
        handle.write(json.dumps({"epoch": 3}) + "\n")
    # a resumable option may change; repeating a fixed one with the run's own value is fine
    args = ["run", "--resume", str(out), "--log-every", "3", "--seed", "1", "--on-nonfinite", "skip"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "has finished all 2 epochs; nothing to do" in " ".join(result.output.split())
    assert (out / "metrics.jsonl").read_bytes() == before
    config = json.loads((out / "config.json").read_text())
    assert config["log_every"] == 3 and config["on_nonfinite"] == "skip" and config["seed"] == 1
