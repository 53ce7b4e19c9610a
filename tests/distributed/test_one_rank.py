"""One rank launched by torchrun takes the distributed path, as many ranks do.

On a one-GPU machine ``torchrun --nproc-per-node 1`` is how the nccl path is
exercised at all (tests/cuda/test_cuda_nccl.py); here the same with gloo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ades_core.distributed import launched_by_torchrun
from tests.cli.tiny_runs import write_images

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("env", "launched"),
    [
        ({}, False),
        ({"WORLD_SIZE": "1"}, False),  # set by hand, not by torchrun: one process
        ({"WORLD_SIZE": "2"}, True),
        ({"WORLD_SIZE": "1", "TORCHELASTIC_RUN_ID": "abc"}, True),  # torchrun --nproc-per-node 1
    ],
)
def test_torchrun_is_recognised_with_one_rank_too(monkeypatch, env, launched):
    for name in ("WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launched_by_torchrun() is launched


@pytest.mark.slow
def test_a_one_rank_torchrun_trains_with_a_process_group(tmp_path):
    data = write_images(tmp_path / "images", {"train": {"a": 4, "b": 4}, "test": {"a": 2, "b": 2}})
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
        "-m", "ades_cli", "run", "--defense", "pgd-at", "--backbone", "ades_cnn_small", "--dataset", "imagefolder",
        "--data-dir", str(data), "--batch-size", "4", "--epochs", "1", "--steps", "1", "--eval-steps", "1",
        "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert (resolved["world_size"], resolved["backend"]) == (1, "gloo")
