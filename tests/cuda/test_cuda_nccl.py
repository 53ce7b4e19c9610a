"""torchrun with nccl: one rank per visible GPU (one rank on a one-GPU machine) trains one run.

The global batch is 8 images per rank; rank 0 alone writes the run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.cuda.gpu import CUDA_TESTS, image_folder

pytestmark = CUDA_TESTS

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_runs_one_nccl_rank_per_gpu(tmp_path):
    ranks = torch.cuda.device_count()
    data = image_folder(tmp_path / "images", train_per_class=4 * ranks)  # 16 images per rank: 2 steps
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
        "-m", "ades_cli", "run", "--defense", "ades", "--cue", "grad,entropy", "--backbone", "ades_cnn_small",
        "--dataset", "imagefolder", "--data-dir", str(data), "--batch-size", str(8 * ranks), "--epochs", "1",
        "--steps", "2", "--eval-steps", "1", "--eval-batch-size", "8", "--device", "cuda", "--amp", "auto",
        "--sync-bn", "--quiet", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert (resolved["world_size"], resolved["backend"]) == (ranks, "nccl")
    assert resolved["device"] == "cuda:0"  # rank 0's own GPU
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["samples"] == 16 * ranks and record["nonfinite_steps"] == 0
    assert result.stdout.count("done:") == 1
