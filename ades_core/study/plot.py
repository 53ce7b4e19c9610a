"""``study.png``: the study's accuracies per arm (mean ± std) and paired differences (95% interval).

Left panel: for every accuracy metric (clean, each attack, AutoAttack, worst
case), one marker per arm at the mean over seeds, error bars of one sample
standard deviation. Middle panel: for every arm but the reference, the paired
difference to the reference per accuracy metric, error bars spanning the t
interval; a dashed line at 0. With the study file's ``comparisons``, a right
panel draws each pair's difference ``arm − against`` the same way. All in
percent (percentage points). Drawn with matplotlib's Agg backend (no display
needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _draw_differences(axis: Any, rows: list[tuple[str, Mapping[str, Any]]], metrics: list[str]) -> None:
    """One marker per (label, metric) at the paired mean, error bars spanning its interval."""
    width = 0.8 / max(1, len(rows))
    for i, (label, differences) in enumerate(rows):
        xs, ys, low, high = [], [], [], []
        for j, metric in enumerate(metrics):
            diff = differences[metric]
            if diff["mean"] is not None:
                xs.append(j + (i - (len(rows) - 1) / 2) * width)
                ys.append(100 * diff["mean"])
                low.append(100 * (diff["mean"] - diff["low"]))
                high.append(100 * (diff["high"] - diff["mean"]))
        axis.errorbar(xs, ys, yerr=[low, high], fmt="s", capsize=3, label=label)
    axis.axhline(0.0, color="gray", linestyle="--", linewidth=1)
    axis.set_xticks(range(len(metrics)), metrics)
    if rows:
        axis.legend(fontsize="small")


def plot_study(results: Mapping[str, Any], path: Path) -> Path:
    """Draw the panels of ``results`` (the record of ``study.json``) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ades_core.engine.runfolder.atomic_files import atomic_write

    metrics = [m["name"] for m in results["metrics"] if m["unit"] == "accuracy"]
    arms = list(results["arms"])
    comparisons = results.get("comparisons") or []
    panels = 3 if comparisons else 2
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    left, middle = axes[0], axes[1]
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        xs, ys, errors = [], [], []
        for j, metric in enumerate(metrics):
            summary = results["arms"][arm]["metrics"][metric]
            if summary["mean"] is not None:
                xs.append(j + (i - (len(arms) - 1) / 2) * width)
                ys.append(100 * summary["mean"])
                errors.append(100 * (summary["std"] or 0.0))
        left.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, label=arm)
    left.set_xticks(range(len(metrics)), metrics)
    left.set_ylabel("accuracy (%), mean ± std over seeds")
    left.set_title("per arm")
    left.legend(fontsize="small")
    confidence = round(100 * results["confidence"])
    against_reference = [(arm, results["arms"][arm]["vs_reference"]) for arm in arms
                         if results["arms"][arm]["vs_reference"] is not None]
    _draw_differences(middle, against_reference, metrics)
    middle.set_ylabel(f"difference (points), {confidence}% t interval")
    middle.set_title(f"paired difference to {results['reference']}")
    if comparisons:
        right = axes[2]
        _draw_differences(right, [(f"{c['arm']} − {c['against']}", c["differences"]) for c in comparisons], metrics)
        right.set_ylabel(f"difference (points), {confidence}% t interval")
        right.set_title("paired differences between arms")
    figure.suptitle(f"study {results['name']}")
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
    return path
