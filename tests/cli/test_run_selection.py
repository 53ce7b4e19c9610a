"""End to end on real CIFAR-10, tiny sizes: a recipe preset, the validation split, EMA,
TensorBoard, plain epoch lines off a terminal, and `ades eval --weights` / `ades compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ades_cli.main import cli

pytestmark = pytest.mark.slow

TINY = ["--train-subset", "64", "--test-subset", "32", "--epochs", "2", "--steps", "1", "--batch-size", "32"]


@pytest.fixture(scope="module")
def run(cifar10_dir, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("runs") / "fast-at"
    args = [
        "run", "--preset", "fast-at", "--backbone", "ades_cnn_small", "--dataset", "imagefolder",
        "--data-dir", str(cifar10_dir), *TINY, "--val-split", "16", "--eval-steps", "1", "--ema", "0.9",
        "--device", "cpu", "--out", str(out),
    ]
    if _has_tensorboard():
        args.append("--tensorboard")
    result = CliRunner().invoke(cli, args)  # CliRunner's output is no terminal: plain lines
    assert result.exit_code == 0, result.output
    return out, result.output


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def test_a_run_on_a_recipe_says_which_it_follows_and_prints_one_plain_line_per_epoch(run):
    out, output = run
    lines = output.splitlines()
    assert lines[0].startswith("recipe fast-at: fast-at as in Wong, Rice, Kolter, ICLR 2020")
    assert any(line.startswith("  differs: ") for line in lines)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("val clean" in line for line in epochs)
    assert not any("\r" in line or "\x1b" in line for line in lines)  # no live bar, no colour codes


def test_the_run_folder_keeps_last_best_and_averaged_weights(run):
    out, _ = run
    for name in ("model.safetensors", "model-best.safetensors", "model-ema.safetensors"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    measured = [r["val_pgd_acc"] for r in records]
    best = max(range(len(measured)), key=lambda i: (measured[i], -i)) + 1
    assert records[-1]["best_epoch"] == best and records[-1]["val_n"] == 16
    assert all(r["val_ema_pgd_acc"] is not None for r in records)


def test_eval_chooses_the_weights_and_compare_shows_which(run):
    out, _ = run
    for weights in ("last", "best", "ema"):
        result = CliRunner().invoke(cli, [
            "eval", str(out), "--weights", weights, "--attack", "pgd20", "--n", "8", "--no-checks",
            "--device", "cpu", "--quiet",
        ])
        assert result.exit_code == 0, result.output
    assert json.loads((out / "model-best.eval.json").read_text())["weights"] == "best"
    assert json.loads((out / "model-ema.eval.json").read_text())["weights"] == "ema"
    result = CliRunner().invoke(cli, ["compare", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert [row["weights"] for row in json.loads(result.output)] == ["last", "best", "ema"]


def test_weights_of_a_run_without_them_is_one_clear_line(cifar10_dir, tmp_path, run):
    out, _ = run
    result = CliRunner().invoke(cli, ["eval", str(out), "--weights", "newest", "--attack", "pgd20"])
    assert result.exit_code == 2 and "must be one of last, best, ema" in result.output


def test_the_tensorboard_event_file_holds_the_scalars(run):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'ades[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/loss", "step/lr", "epoch/train_loss", "epoch/test_pgd_acc", "epoch/val_pgd_acc"} <= tags
    assert [e.step for e in events.Scalars("epoch/val_pgd_acc")] == [1, 2]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events.Scalars("epoch/val_pgd_acc")[-1].value == pytest.approx(records[-1]["val_pgd_acc"])
