"""Study run folders written by hand: the files ``ades run`` and ``ades eval`` leave, with chosen numbers.

They let the planner, the table and the CLI's skip logic be tested without training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_study_file(path: Path, out: Path, data_dir: Path | str = "data", **extra: object) -> Path:
    """A two-arm, two-seed study on the small CNN (tiny sizes), as TOML; ``extra`` adds top-level lines."""
    lines = [
        'name = "toy"',
        f'out = "{out}"',
        'reference = "pgd-at"',
        "seeds = [0, 1]",
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
        "",
        "[run]",
        'backbone = "ades_cnn_small"',
        'dataset = "imagefolder"',
        f'data-dir = "{data_dir}"',
        "train-subset = 16",
        "test-subset = 8",
        "batch-size = 8",
        "epochs = 1",
        "steps = 1",
        "eval-steps = 1",
        "checkpoint-every = 1",
        'device = "cpu"',
        "",
        "[eval]",
        'attack = "fgsm"',
        "n = 8",
        "checks = false",
        "batch-size = 8",
        "",
        "[[arms]]",
        'name = "pgd-at"',
        'defense = "pgd-at"',
        "",
        "[[arms]]",
        'name = "ades"',
        'defense = "ades"',
        'cue = "grad,entropy"',
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_finished_run(
    folder: Path,
    *,
    clean: float,
    robust: dict[str, float],
    worst: float,
    eps_mean: float = 8 / 255,
    eps_std: float = 0.0,
    seconds: tuple[float, ...] = (10.0,),
    evaluated: bool = True,
    autoattack: float | None = None,
) -> Path:
    """A run folder that finished ``len(seconds)`` epochs and (``evaluated``) its evaluation, and (``autoattack``)
    an AutoAttack report with that robust accuracy."""
    folder.mkdir(parents=True, exist_ok=True)
    epochs = len(seconds)
    (folder / "config.json").write_text(json.dumps({"optim": {"epochs": epochs}, "resolved": {"epochs": epochs}}))
    records = [
        {"epoch": e + 1, "eps_mean": eps_mean, "eps_std": eps_std, "train_seconds": s} for e, s in enumerate(seconds)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "model.safetensors").write_bytes(b"weights")
    _write_state(folder, epoch=epochs, step=0)
    if evaluated:
        report = {
            "clean_acc": clean,
            "attacks": [{"name": name, "robust_acc": value} for name, value in robust.items()],
            "worst_case": {"name": "worst-case", "robust_acc": worst},
        }
        _write_report(folder / "eval.json", report)
    if autoattack is not None:
        _write_report(folder / "eval-autoattack.json",
                      {"clean_acc": clean, "attacks": [{"name": "autoattack", "robust_acc": autoattack}]})
    return folder


def _write_report(path: Path, report: dict) -> None:
    """An evaluation report, dated after the model it evaluates (so the study counts it as current)."""
    path.write_text(json.dumps(report))
    later = (path.parent / "model.safetensors").stat().st_mtime + 1
    os.utime(path, (later, later))


def write_started_run(folder: Path, *, saved_state: bool) -> Path:
    """A run killed during its first epoch: config.json, and (``saved_state``) a training state."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"optim": {"epochs": 1}, "resolved": {"epochs": 1}}))
    (folder / "metrics.jsonl").write_text("")
    if saved_state:
        _write_state(folder, epoch=0, step=1)
    return folder


def _write_state(folder: Path, *, epoch: int, step: int) -> None:
    """The part of ``checkpoint/state.json`` the study reads: the saved position."""
    (folder / "checkpoint").mkdir(exist_ok=True)
    state = {"format": "ades-training-state", "state": {"position": {"epoch": epoch, "step": step}}}
    (folder / "checkpoint" / "state.json").write_text(json.dumps(state))
