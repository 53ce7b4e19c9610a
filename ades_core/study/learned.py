"""What each arm's scheduler learned, read from its runs' ``telemetry.jsonl``.

For the last epoch of every finished training run: the Spearman correlation
of the per-sample budgets with each cue (``cues.<name>.spearman``), and, for
the objectives that fit a measured target, the held-out R^2 and Spearman of
the scheduler's prediction against it (``target.r2``, ``target.spearman``;
see docs/telemetry.md). Per arm: the mean over the seeds that have it, with
their count. A fixed budget (pgd-at) has none of these.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ades_core.engine.runfolder import TELEMETRY_FILE


def last_telemetry(folder: Path) -> dict[str, Any] | None:
    """The last readable record of ``folder/telemetry.jsonl``, or ``None``."""
    try:
        lines = (Path(folder) / TELEMETRY_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def learned_figures(record: dict[str, Any] | None) -> dict[str, float]:
    """``{"eps~<cue>": Spearman, "target R^2": ..., "target Spearman": ...}`` from one telemetry record."""
    if not record or not record.get("adaptive"):
        return {}
    figures: dict[str, float] = {}
    for cue, stats in (record.get("cues") or {}).items():
        if isinstance(stats, dict) and (value := _number(stats.get("spearman"))) is not None:
            figures[f"eps~{cue}"] = value
    target = record.get("target") or {}
    for key, label in (("r2", "target R^2"), ("spearman", "target Spearman")):
        if (value := _number(target.get(key))) is not None:
            figures[label] = value
    return figures


def summarise_learned(folders: Iterable[Path]) -> dict[str, dict[str, float]]:
    """Per figure, ``{"mean", "sd", "n"}`` over the given run folders (sd 0.0 for one run)."""
    values: dict[str, list[float]] = {}
    for folder in folders:
        for name, value in learned_figures(last_telemetry(folder)).items():
            values.setdefault(name, []).append(value)
    return {
        name: {"mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
        for name, v in values.items()
    }
