"""Per-sample defense state (IAAT's budgets, MMA's margins, Free-AT's delta) survives a kill and resume.

A real run is SIGKILLed while writing the training state of its second epoch,
so the state on disk is the one after epoch 1. The test checks that the
state holds the defense's per-sample buffer, that restoring it puts exactly
those values back into a freshly built defense, and that the resumed run
ends bitwise identical to an uninterrupted one (CPU, same thread count), so
the second epoch went on from the saved per-sample state.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ades_cli.main import cli
from ades_core import build
from ades_core.engine.runfolder import resume_config
from ades_core.engine.runfolder.state_capture import restore_state
from ades_core.engine.runfolder.state_files import load_training_state
from tests.kill_hook import kill_during_checkpoint_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

CASES = {
    # defense: (its per-sample buffer, its options); every run makes two passes over the data
    "iaat": ("budgets", ["--epochs", "2", "--iaat-warmup", "1"]),  # adapts in the second pass
    "mma": ("margins", ["--epochs", "2"]),
    "free-at": ("delta", ["--epochs", "4", "--replays", "2"]),  # 4 epochs / 2 replays = 2 passes
}


def _args(defense: str, data_dir: Path, out: Path) -> list[str]:
    return [
        "run", "--defense", defense, "--backbone", "ades_cnn_small", "--dataset", "imagefolder",
        "--data-dir", str(data_dir), "--train-subset", "64", "--test-subset", "16", "--batch-size", "32",
        "--steps", "1", "--eval-steps", "1", "--seed", "3", "--device", "cpu",
        "--quiet", "--out", str(out), *CASES[defense][1],
    ]  # fmt: skip


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "done:" in result.output


@pytest.mark.parametrize("defense", list(CASES))
def test_a_killed_run_resumes_with_its_per_sample_state_and_ends_as_the_uninterrupted_one(
    defense, cifar10_dir, tmp_path
):
    buffer = CASES[defense][0]
    reference = tmp_path / "reference"
    _run(_args(defense, cifar10_dir, reference))

    out = tmp_path / "run"
    # without --checkpoint-every, the 1st save ends pass 1 and the 2nd (killed) ends pass 2
    process = subprocess.run(
        [sys.executable, "-m", "ades_cli", *_args(defense, cifar10_dir, out)],
        cwd=REPO,
        env=kill_during_checkpoint_env(2),
        capture_output=True,
        timeout=600,
    )
    assert process.returncode == -signal.SIGKILL, process.stdout.decode() + process.stderr.decode()
    state = load_training_state(out)
    assert state["position"]["epoch"] == 1 and state["position"]["step"] == 0
    saved = state["defense"][buffer]
    assert saved.abs().sum() > 0, "the first pass left per-sample state behind"

    setup = build(resume_config(out, {}))
    assert not torch.equal(getattr(setup.defense, buffer), saved)
    restore_state(setup, state)
    assert torch.equal(getattr(setup.defense, buffer), saved), "the restored buffer is the saved one"

    _run(["run", "--resume", str(out), "--quiet"])
    for name in ("model.safetensors", "defense.safetensors"):
        got, want = load_file(str(out / name)), load_file(str(reference / name))
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), f"{name}:{key} differs from the uninterrupted run"
    final = load_file(str(out / "defense.safetensors"))[buffer]
    assert not torch.equal(final, saved), "pass 2 moved the per-sample state on from the saved one"
    drop = {"train_seconds", "eval_seconds"}
    lines = [
        [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.read_text().splitlines()]
        for path in (out / "metrics.jsonl", reference / "metrics.jsonl")
    ]  # fmt: skip
    assert lines[0] == lines[1] and len(lines[0]) == 2
