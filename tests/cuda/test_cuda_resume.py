"""A CUDA run killed mid-epoch resumes from its training state and finishes, on the GPU.

The run is killed (SIGKILL) while it writes the state of epoch 2, step 2
(the test hook of :mod:`ades_core.engine.runfolder.state_files`); the state of
epoch 2, step 1 is then the last whole one, and ``ades run --resume``
continues from it. CUDA kernels are not bitwise deterministic (cuDNN picks
its algorithms), so unlike the CPU test (tests/engine/test_resume.py) the
resumed run is compared by position and contents, not bit for bit: it ends
at the uninterrupted run's step, keeps the finished epoch's metrics line
unchanged, restores the CUDA generator and optimiser state on the GPU, and
its weights are finite.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ades_cli.main import cli
from ades_core import build
from ades_core.engine.runfolder import resume_config
from ades_core.engine.runfolder.state_capture import restore_state
from ades_core.engine.runfolder.state_files import load_training_state, state_folder
from tests.kill_hook import kill_during_checkpoint_env
from tests.cuda.gpu import CUDA_TESTS, image_folder

pytestmark = CUDA_TESTS

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 4  # 32 images in batches of 8


def _args(data_dir: Path, out: Path) -> list[str]:
    return [
        "run", "--defense", "ades", "--cue", "grad,entropy", "--backbone", "ades_cnn_small",
        "--dataset", "imagefolder", "--data-dir", str(data_dir), "--batch-size", "8", "--epochs", "2",
        "--steps", "2", "--eval-steps", "1", "--eval-batch-size", "8", "--seed", "1", "--device", "cuda",
        "--checkpoint-every", "1", "--quiet", "--out", str(out),
    ]  # fmt: skip


def _position(out: Path) -> dict:
    return json.loads((state_folder(out) / "state.json").read_text())["state"]["position"]


def test_a_killed_cuda_run_resumes_on_the_gpu_and_finishes(tmp_path):
    data = image_folder(tmp_path / "images")
    out = tmp_path / "run"
    # saves: epoch 1 steps 1-3, end of epoch 1, epoch 2 step 1, then the 6th (epoch 2 step 2) dies
    killed = subprocess.run(
        [sys.executable, "-m", "ades_cli", *_args(data, out)], cwd=REPO, capture_output=True, text=True,
        env=kill_during_checkpoint_env(6), timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert _position(out) == {"epoch": 1, "step": 1, "global_step": STEPS_PER_EPOCH + 1}
    first_epoch = (out / "metrics.jsonl").read_text().splitlines()
    assert len(first_epoch) == 1

    state = load_training_state(out)
    assert state is not None and state["rng"].get("torch_cuda"), "no CUDA generator state was saved"
    setup = build(resume_config(out, {}))
    restore_state(setup, state)
    moments = [t for s in setup.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    assert moments and all(t.is_cuda for t in moments)
    assert torch.equal(torch.cuda.get_rng_state().cpu(), state["rng"]["torch_cuda"][0].to(torch.uint8).cpu())

    result = CliRunner().invoke(cli, ["run", "--resume", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == first_epoch[0]
    assert _position(out) == {"epoch": 2, "step": 0, "global_step": 2 * STEPS_PER_EPOCH}
    record = json.loads(lines[1])
    assert record["samples"] == 32 and math.isfinite(record["train_loss"])
    weights = load_file(str(out / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
