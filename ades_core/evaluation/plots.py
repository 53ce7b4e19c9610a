"""Robust accuracy against eps: one PNG, one line per run, on the same axes.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global
backend state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from ades_core.evaluation.report import EvalReportError


@attrs.frozen(kw_only=True)
class SweepSeries:
    """One line of the plot: robust accuracy (fractions) at budgets ``eps`` ([0, 1] scale)."""

    label: str
    eps: tuple[float, ...] = attrs.field(converter=tuple)
    robust_acc: tuple[float, ...] = attrs.field(converter=tuple)
    n: int | None = None

    def __attrs_post_init__(self) -> None:
        if len(self.eps) != len(self.robust_acc):
            raise ValueError(f"{self.label}: {len(self.eps)} budgets but {len(self.robust_acc)} accuracies")


def series_from_report(report: dict[str, Any], label: str | None = None) -> SweepSeries:
    """The eps sweep of an ``eval.json`` payload (see :mod:`ades_core.evaluation.report`)."""
    points = sorted((p["eps"], p["robust_acc"]) for p in report.get("sweep", {}).get("points", []))
    if not points:
        where = report.get("_path", "this evaluation")
        raise EvalReportError(f"{where} holds no eps sweep; run `ades eval --eps-sweep 4/255,8/255 ...`")
    if label is None:
        run = report.get("run_dir") or report.get("model", "")
        defense = report.get("defense") or "model"
        folder = Path(run).name if run else ""
        label = defense if folder in ("", defense) else f"{defense} ({folder})"
    return SweepSeries(label=label, eps=[e for e, _ in points], robust_acc=[a for _, a in points], n=report.get("n"))


def plot_sweeps(series: Sequence[SweepSeries], path: str | Path, *, title: str | None = None) -> Path:
    """Write a PNG of robust accuracy (%) against eps (in /255) for every series."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not series:
        raise EvalReportError("nothing to plot: give at least one evaluation with an eps sweep")
    figure = Figure(figsize=(6.0, 4.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for line in series:
        axes.plot([255 * e for e in line.eps], [100 * a for a in line.robust_acc], marker="o", label=line.label)
    ticks = sorted({255 * e for line in series for e in line.eps})
    if len(ticks) <= 12:
        axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ns = sorted({s.n for s in series if s.n is not None})
    axes.set_xlabel("L-inf budget eps (x/255)")
    axes.set_ylabel("robust accuracy, PGD-20 (%)")
    axes.set_title(title or ("Robust accuracy vs eps" + (f" (n={ns[0]})" if len(ns) == 1 else "")))
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
