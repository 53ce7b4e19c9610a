"""What the trainer prints: the live progress text, the one line per epoch, the epoch's warnings.

Pure functions of the figures the trainer has read (accuracies are fractions
in [0, 1], budgets in [0, 1] pixel scale and shown in /255 steps), so a
batch job's log and a terminal show the same line.
"""

from __future__ import annotations

from typing import Any

from ades_core.config import format_eps

SATURATED_SIGMA = 0.05
"""Mean sigma below this (or above 1 - this) for an epoch: the scheduler has saturated."""


def percent(fraction: float | None) -> str:
    """``12.3%``, or ``n/a`` for a metric the defense does not report."""
    return "n/a" if fraction is None else f"{100 * fraction:.1f}%"


def budget_text(mean: float, std: float, norm: str, low: float | None = None, high: float | None = None) -> str:
    """Budgets as the epoch lines show them: L-inf in /255 steps (``eps 8.00±0.00/255``), L2 as
    radii (``l2 eps 0.500±0.010``), with the range ``[low, high]`` when given."""
    if norm == "linf":
        text = f"eps {255 * mean:.2f}±{255 * std:.2f}/255"
        return text if low is None else text + f" [{255 * low:.2f}, {255 * high:.2f}]"
    text = f"{norm} eps {mean:.3f}±{std:.3f}"
    return text if low is None else text + f" [{low:.3f}, {high:.3f}]"


def progress_text(live: dict[str, Any], norm: str = "linf") -> str:
    """The progress bar's description from the running statistics of an epoch."""
    text = (
        f"loss {live['train_loss']:.3f}  clean {percent(live['train_clean_acc'])}  "
        f"adv {100 * live['train_adv_acc']:.1f}%  {budget_text(live['eps_mean'], live['eps_std'], norm)}"
    )
    if live["nonfinite_steps"]:
        text += f"  skipped {live['nonfinite_steps']}"
    return text


def epoch_line(r: dict[str, Any], norm: str = "linf") -> str:
    """One line for a finished epoch's metrics record (training, test check, validation check)."""
    budgets = budget_text(r["eps_mean"], r["eps_std"], norm, r["eps_min"], r["eps_max"])
    line = (
        f"epoch {r['epoch']}: loss {r['train_loss']:.3f}  train clean {percent(r['train_clean_acc'])}"
        f"  adv {100 * r['train_adv_acc']:.1f}%  {budgets}  {r['train_seconds']:.1f}s"
    )
    if r.get("test_clean_acc") is not None:
        line += (
            f"  | test clean {100 * r['test_clean_acc']:.1f}%  {norm} PGD-{r['test_pgd_steps']}"
            f" {100 * r['test_pgd_acc']:.1f}% (n={r['test_n']})"
        )
    if r.get("val_pgd_acc") is not None:
        line += (
            f"  | val clean {100 * r['val_clean_acc']:.1f}%  PGD {100 * r['val_pgd_acc']:.1f}%"
            f" (best: epoch {r['best_epoch']})"
        )
    return line


def epoch_warnings(summary: dict[str, Any], *, scheduler_learnable: bool, norm: str = "linf") -> list[str]:
    """Warnings on an epoch's training statistics: skipped steps, a saturated learnable scheduler."""
    warnings = []
    if summary["nonfinite_steps"]:
        warnings.append(
            f"skipped {summary['nonfinite_steps']} step(s) with a non-finite loss or gradient "
            f"(first: step {summary['first_nonfinite_step']})"
        )
    sigma = summary["sigma_mean"]
    if scheduler_learnable and (sigma < SATURATED_SIGMA or sigma > 1 - SATURATED_SIGMA):
        warnings.append(
            f"scheduler saturated: mean sigma {sigma:.3f} this epoch (eps mean "
            f"{format_eps(summary['eps_mean'], norm)}); the learned budget has collapsed to a bound"
        )
    return warnings


__all__ = ["SATURATED_SIGMA", "budget_text", "epoch_line", "epoch_warnings", "percent", "progress_text"]
