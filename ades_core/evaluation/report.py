"""``eval.json``: one evaluation, written beside the model and read back by ``ades compare`` / ``ades plot``.

Layout (version 1)::

    {
      "format": "ades-eval", "version": 1,
      "model": "runs/x/model.safetensors", "run_dir": "runs/x" | null,
      "defense": "ades", "backbone": "ades_cnn_small", "trained_norm": "linf" | "l2" | null,
      "external_model": null | {"arch", "weights", "num_classes", "mean", "std"},
      "dataset": {"name", "data_dir", "split": "test", "n", "subset",
                  "order": "random" | "first" | "all", "subset_seed" (null unless random), "classes_present"},
      "device": "cpu", "batch_size": 256, "world_size": 1,
      "versions": {"ades", "torch", "pyautoattack", "torchattacks"},
      "n", "norm" ("linf" or "l2"), "eps", "eps_text", "seed", "precision": {"dtype": "fp32", "tf32": false}, "clean_acc",
      "attacks": [{"name", "eps", "eps_text", "n", "clean_acc", "robust_acc", "seconds",
                   "settings": {"attack", "implementation", ...}, "white_box"}, ...],
      "worst_case": {... same keys, "settings": {"attacks": [...]}} | null,
      "sweep": {"attack": "pgd20", "points": [{... same keys}, ...]},
      "checks": [{"name", "status": "passed" | "failed" | "not-run", "passed", "message", "details"}, ...],
      "warnings": ["..."],                       (the messages of the failed checks)
      "seconds": total
    }

Accuracies are fractions in [0, 1]; budgets are in ``norm``: L-inf in [0, 1]
pixel scale, L2 Euclidean radii in pixel space (a report without ``norm``,
from before L2, is L-inf). Each
attack's ``settings.implementation`` names the code that ran it
(``ades==0.1.0`` for PGD and CW, ``pyautoattack==0.2.0`` for the official
AutoAttack and Square, ``torchattacks==3.5.1`` for its re-implementation).
``world_size`` is the number of ``torchrun`` processes the evaluation was
sharded over (1 alone); ``device`` is rank 0's.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ades_core.errors import AdesError
from ades_core.evaluation.sources import EVAL_FILE, EvalData, RunInfo
from ades_core.evaluation.suite import EvalResult

FORMAT = "ades-eval"
VERSION = 1


class EvalReportError(AdesError, ValueError):
    """An ``eval.json`` that is missing or not ades's; one line."""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def build_report(
    result: EvalResult,
    info: RunInfo,
    data: EvalData,
    *,
    device: torch.device,
    batch_size: int,
    world_size: int = 1,
) -> dict[str, Any]:
    """The ``eval.json`` payload of one evaluation (``world_size``: the ranks it was sharded over)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": str(info.model_file),
        "run_dir": None if info.run_dir is None else str(info.run_dir),
        "weights": info.weights,
        "defense": info.defense,
        "external_model": info.external,
        "backbone": info.backbone,
        "trained_norm": (info.config.get("attack") or {}).get("norm", "linf") if info.config else None,
        "dataset": data.describe(),
        "device": str(device),
        "batch_size": batch_size,
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),
        "versions": {d: _version(d) for d in ("ades", "torch", "pyautoattack", "torchattacks")},
        **result.to_dict(),
    }


def write_report(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(payload, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def find_report(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/eval.json``."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / EVAL_FILE
    if not path.is_file():
        raise EvalReportError(f"no evaluation at {path}; run `ades eval` on it first")
    return path


def read_report(path: str | Path) -> dict[str, Any]:
    """Read an ``eval.json`` (or a run folder holding one)."""
    file = find_report(path)
    try:
        payload = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise EvalReportError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise EvalReportError(f"{file} is not an ades evaluation (format {FORMAT!r})")
    payload["_path"] = str(file)
    return payload
