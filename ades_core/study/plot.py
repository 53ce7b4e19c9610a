"""``study.png``: the study's accuracies per arm (mean ± std) and paired differences (95% interval).

Left panel: for every accuracy metric (clean, each attack, AutoAttack, worst
case), one marker per arm at the mean over seeds, error bars of one sample
standard deviation. Right panel: for every arm but the reference, the paired
difference to the reference per accuracy metric, error bars spanning the t
interval; a dashed line at 0. Both in percent (percentage points). Drawn with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def plot_study(results: Mapping[str, Any], path: Path) -> Path:
    """Draw the two panels of ``results`` (the record of ``study.json``) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ades_core.engine.runfolder.atomic_files import atomic_write

    metrics = [m["name"] for m in results["metrics"] if m["unit"] == "accuracy"]
    arms = list(results["arms"])
    others = [a for a in arms if results["arms"][a]["vs_reference"] is not None]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
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
    width = 0.8 / max(1, len(others))
    for i, arm in enumerate(others):
        xs, ys, low, high = [], [], [], []
        for j, metric in enumerate(metrics):
            diff = results["arms"][arm]["vs_reference"][metric]
            if diff["mean"] is not None:
                xs.append(j + (i - (len(others) - 1) / 2) * width)
                ys.append(100 * diff["mean"])
                low.append(100 * (diff["mean"] - diff["low"]))
                high.append(100 * (diff["high"] - diff["mean"]))
        right.errorbar(xs, ys, yerr=[low, high], fmt="s", capsize=3, label=arm)
    right.axhline(0.0, color="gray", linestyle="--", linewidth=1)
    right.set_xticks(range(len(metrics)), metrics)
    confidence = round(100 * results["confidence"])
    right.set_ylabel(f"difference (points), {confidence}% t interval")
    right.set_title(f"paired difference to {results['reference']}")
    if others:
        right.legend(fontsize="small")
    figure.suptitle(f"study {results['name']}")
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
    return path
