"""The statistics of budget telemetry: plain functions of tensors, checkable by hand.

Histograms and quantiles of the budgets, Pearson's and Spearman's correlation,
the fractions of budgets that rose, fell or stayed between epochs, the fit of
a scheduler to its measured robustness target (R^2), and the warnings drawn
from them. :class:`~ades_core.engine.telemetry.BudgetTelemetry` computes each
epoch's record with them. Budgets are in [0, 1] pixel scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

HISTOGRAM_BINS = 32
"""Equal-width bins of the eps histogram, fixed for the whole run."""

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
"""Quantiles of eps recorded per epoch (linear interpolation, as ``numpy.quantile``)."""

SAMPLE_SIZE = 512
"""Dataset indices drawn once (from the run seed) whose (eps, cues) pairs every epoch records."""

STAY_TOLERANCE = 1e-3
"""A budget that moved by at most this fraction of the histogram range since the last epoch stayed."""

MIN_SPREAD_FRACTION = 0.02
"""Adaptive budgets whose per-sample std over an epoch is below this fraction of lam trigger a warning."""

MIN_TARGET_R2 = 0.05
"""A held-out R^2 of the scheduler's fit to its robustness target below this triggers a warning."""

TARGET_COLUMNS = ("deviation", "prediction", "radius", "broken", "held_out", "present")
"""Per-sample columns of the robustness-target buffer (the ``target`` objective)."""


def histogram_counts(values: Tensor, low: float, high: float, bins: int) -> Tensor:
    """Counts ``(bins,)`` int64 of ``values`` in ``bins`` equal-width bins over ``[low, high]``.

    Bin ``j`` holds ``low + j*w <= v < low + (j+1)*w`` (``w = (high - low) / bins``);
    the last bin also holds ``v == high``. Values outside the range are
    counted in the first or last bin, so the counts always sum to ``len(values)``.
    """
    if not high > low:
        raise ValueError(f"histogram range needs high > low, got [{low}, {high}]")
    position = (values.double() - low) / (high - low) * bins
    index = position.floor().clamp(0, bins - 1).long()
    return torch.bincount(index, minlength=bins)


def linear_quantiles(values: Tensor, qs: Sequence[float]) -> Tensor:
    """The ``qs`` quantiles of 1-d ``values`` with linear interpolation (``numpy.quantile``'s default)."""
    return torch.quantile(values.double(), torch.tensor(list(qs), dtype=torch.float64, device=values.device))


def pearson(a: Tensor, b: Tensor) -> float | None:
    """Pearson's r of two 1-d tensors; ``None`` when either is constant (r is undefined)."""
    a, b = a.double(), b.double()
    if a.numel() < 2 or bool(a.max() == a.min()) or bool(b.max() == b.min()):
        return None
    a, b = a - a.mean(), b - b.mean()
    r = (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum())
    return float(r.clamp(-1.0, 1.0))


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks ``(n,)`` float64 of 1-d ``values``; tied values share the mean of their ranks."""
    ordered, order = torch.sort(values, stable=True)
    _, group, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()
    mean_rank = last - (counts.double() - 1) / 2
    ranks = torch.empty(values.shape[0], dtype=torch.float64, device=values.device)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(a: Tensor, b: Tensor) -> float | None:
    """Spearman's rho (Pearson's r of the average ranks, so ties are handled); ``None`` if undefined."""
    if a.numel() < 2:
        return None
    return pearson(average_ranks(a), average_ranks(b))


def change_fractions(now: Tensor, before: Tensor, tolerance: float) -> dict[str, float | int]:
    """How the budgets of the same samples moved between two epochs.

    Args:
        now, before: ``(n,)`` budgets of the same ``n`` samples, this epoch and the last.
        tolerance: a change of at most this much (pixel scale) counts as staying.

    Returns:
        ``rose``, ``fell``, ``stayed``: fractions of the ``n`` samples (summing
        to 1), ``compared``: ``n``, and ``tolerance``.
    """
    n = now.numel()
    delta = now.double() - before.double()
    rose, fell = int((delta > tolerance).sum()), int((delta < -tolerance).sum())
    return {
        "rose": rose / n,
        "fell": fell / n,
        "stayed": (n - rose - fell) / n,
        "compared": n,
        "tolerance": tolerance,
    }


def r_squared(target: Tensor, prediction: Tensor) -> float | None:
    """``1 - sum (t - p)^2 / sum (t - mean t)^2`` of 1-d tensors; ``None`` when ``t`` is constant.

    The fraction of the target's variance the prediction explains (1: exact,
    0: no better than the mean, negative: worse).
    """
    t, p = target.double(), prediction.double()
    if t.numel() < 2 or bool(t.max() == t.min()):
        return None
    residual = (t - p).square().sum()
    total = (t - t.mean()).square().sum()
    return float(1 - residual / total)


def target_fit(columns: Tensor) -> dict[str, Any] | None:
    """The ``target`` record of an epoch from the seen samples' target columns ``(n, 6)``
    (:data:`TARGET_COLUMNS`), or ``None`` when no sample carried a target."""
    columns = columns[columns[:, 5] > 0].double()
    if columns.shape[0] == 0:
        return None
    held = columns[columns[:, 4] > 0.5]
    radius = columns[:, 2]
    return {
        "samples": int(columns.shape[0]),
        "held_out": int(held.shape[0]),
        "r2": r_squared(held[:, 0], held[:, 1]) if held.shape[0] else None,
        "spearman": spearman(held[:, 1], held[:, 0]) if held.shape[0] else None,
        "radius_mean": float(radius.mean()),
        "radius_std": float(radius.std(correction=0)),
        "broken": float(columns[:, 3].mean()),
    }


def target_warning(r2: float | None, threshold: float = MIN_TARGET_R2) -> str | None:
    """The warning for a scheduler whose cues hardly predict its robustness target, or ``None``."""
    if r2 is None or r2 >= threshold:
        return None
    return (
        f"the cues do not predict robustness: held-out R^2 {r2:.3f} of the scheduler's sigma against "
        f"the measured breaking radius this epoch is below {threshold:g}"
    )


def spread_warning(eps_std: float, lam: float, fraction: float = MIN_SPREAD_FRACTION) -> str | None:
    """The warning for adaptive budgets that hardly differ between samples, or ``None``.

    Args:
        eps_std: the per-sample standard deviation of eps over an epoch (pixel scale).
        lam: the width of the adaptive range, ``eps_max - eps_min`` (pixel scale).
    """
    if lam <= 0 or eps_std >= fraction * lam:
        return None
    return (
        f"budgets hardly differ between samples: eps std {255 * eps_std:.3f}/255 this epoch is below "
        f"{fraction:g} x lam = {255 * fraction * lam:.3f}/255; the adaptive defense trains like a fixed budget"
    )


def _short(value: float) -> float:
    """``value`` to float32's precision (7 significant digits), to keep the JSON lines short."""
    return float(f"{value:.7g}")


# ---------------------------------------------------------------- per-sample buffers
