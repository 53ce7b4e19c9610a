"""Two CPU ranks (gloo, launched with torchrun) train the run one process trains.

The comparison is made where the math is the same on one rank with batch B
and on two ranks with B/2 each, so that only float summation order differs:

* ``--no-augment`` and ``--eps-min 0``: the shared PGD start is
  ``clip(x + 0 * u)`` = ``x``, so no random draw changes a number (each rank
  draws its own noise, as it should in a real run);
* ``--sync-bn``: BatchNorm normalises the training forward over the global
  batch (on one process BatchNorm already does);
* the cue min-max normalisation and the scheduler's fixed mean
  (``allocate-min``, chosen here because the default ``target-quantile`` ranks
  budgets within each rank's batch) are reduced over ranks, and DDP
  and the trainer average the model's and scheduler's gradients.

Tolerances: the first step is the same up to float32 rounding (eps statistics
bitwise in practice); four SGD steps at lr 0.01 keep the difference at about
1e-6 relative (measured), so the loss is compared to 1e-4 relative and the eps
statistics to 1e-6 absolute (1/4000 of 1/255).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core.attacks.pgd import PGD
from ades_core.data import DataRequest, load_datasets
from ades_core.data.loader import DeviceLoader
from ades_core.distributed import shard_bounds
from ades_core.engine.runfolder.model_files import load_model
from ades_core.engine.evaluator import evaluate_robustness

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EVAL_BATCH = 24  # 64 test images -> batches of 24, 24, 16: rank 0 takes one, rank 1 two


def _args(data_dir: Path, out: Path) -> list[str]:
    return [
        "run", "--defense", "ades", "--cue", "grad,entropy", "--backbone", "ades_cnn_small",
        "--dataset", "imagefolder", "--data-dir", str(data_dir), "--train-subset", "128",
        "--test-subset", "64", "--batch-size", "32", "--epochs", "1", "--steps", "1",
        "--eval-steps", "1", "--eval-batch-size", str(EVAL_BATCH), "--seed", "1", "--lr", "0.01",
        "--eps-min", "0", "--scheduler-objective", "allocate-min",
        "--no-augment", "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_run(cifar10_dir, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ddp") / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "ades_cli", *_args(cifar10_dir, out), "--sync-bn",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


@pytest.fixture(scope="module")
def single_run(cifar10_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    result = CliRunner().invoke(cli, _args(cifar10_dir, out))
    assert result.exit_code == 0, result.output
    return out


def test_two_ranks_give_the_eps_statistics_and_loss_of_one_process(ddp_run, single_run):
    (got,), (want,) = _metrics(ddp_run[0]), _metrics(single_run)
    assert got["samples"] == want["samples"] == 128
    for key in ("eps_mean", "eps_std", "eps_min", "eps_max", "sigma_mean"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert got["sigma_mean"] == pytest.approx(0.5, abs=1e-6)  # the global mean is held, not each rank's
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
    assert got["train_clean_acc"] == want["train_clean_acc"]


def test_the_run_folder_is_written_once_by_rank_zero(ddp_run):
    out, stdout = ddp_run
    assert len(_metrics(out)) == 1  # one line per epoch, not one per rank
    assert stdout.count("done:") == 1
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert resolved["world_size"] == 2 and resolved["backend"] == "gloo"
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint", "config.json", "defense.safetensors", "metrics.jsonl", "model.safetensors",
        "telemetry.jsonl",
    ]  # fmt: skip


def test_sharded_evaluation_equals_single_process_evaluation(ddp_run, cifar10_dir):
    (record,) = _metrics(ddp_run[0])
    model = load_model(ddp_run[0] / "model.safetensors")
    data = load_datasets(
        "imagefolder", DataRequest(root=cifar10_dir, train_subset=128, test_subset=64, seed=1)
    ).test
    attack = PGD(steps=1, alpha=2 / 255, random_start=True)
    report = evaluate_robustness(
        model, data, attack, record["test_eps"], batch_size=EVAL_BATCH, device=torch.device("cpu"), seed=1
    )
    assert record["test_n"] == report.n == 64
    assert record["test_clean_acc"] == report.clean_acc
    assert record["test_pgd_acc"] == report.robust_acc


def test_resume_under_torchrun_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(cli, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "--resume is not supported under torchrun" in result.output


def test_shards_cover_the_split_in_order_with_whole_batches():
    for n, world, align in [(64, 2, 24), (10, 3, 1), (5, 4, 2), (0, 2, 8), (100, 8, 7)]:
        bounds = [shard_bounds(n, r, world, align=align) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(start % align == 0 or start == n for start, _ in bounds)


def test_rank_batches_are_slices_of_the_single_process_batches():
    from ades_core.data import ImageTensors

    data = ImageTensors(torch.zeros(70, 3, 4, 4, dtype=torch.uint8), torch.zeros(70, dtype=torch.long), ("a",))
    single = DeviceLoader(data, batch_size=16, device="cpu", shuffle=True, augment=False, seed=3)
    ranks = [
        DeviceLoader(data, batch_size=4, device="cpu", shuffle=True, augment=False, seed=3, rank=r, world_size=4)
        for r in range(4)
    ]
    for loader in (single, *ranks):
        loader.set_epoch(2)
    per_rank = [[idx for _, _, idx in loader] for loader in ranks]
    assert all(len(batches) == 4 for batches in per_rank)  # 70 // 16: the incomplete global batch is dropped
    for step, (_, _, want) in zip(range(4), single):
        assert torch.equal(torch.cat([batches[step] for batches in per_rank]), want)
