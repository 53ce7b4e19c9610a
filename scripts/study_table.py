"""Markdown tables of a study's arms: accuracy under attack and what the budget did.

Usage::

    python scripts/study_table.py runs/study ARM [ARM ...]

Reads each arm's ``eval.json`` (``ades eval``), ``metrics.jsonl`` and
``telemetry.jsonl`` and prints two tables: accuracies with their binomial
standard errors and seconds per epoch; and, per epoch, the mean and standard
deviation of eps (x/255) with the Spearman correlation of eps with each cue in
the last epoch.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pct(value: float | None, n: int) -> str:
    if value is None:
        return "—"
    se = math.sqrt(max(value * (1 - value), 1e-12) / n)
    return f"{100 * value:.1f} ± {100 * se:.1f}"


def main() -> None:
    root, arms = Path(sys.argv[1]), sys.argv[2:]
    print("| arm | clean | PGD-20 | CW | worst case | s/epoch (1 thread) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for arm in arms:
        folder = root / arm
        report = json.loads((folder / "eval.json").read_text())
        rows = {row["name"]: row for row in report["attacks"]}
        n = report["n"]
        seconds = [round(r["train_seconds"]) for r in _lines(folder / "metrics.jsonl")]
        print(
            f"| {arm} | {_pct(report['clean_acc'], n)} | {_pct(rows['pgd20']['robust_acc'], n)} | "
            f"{_pct(rows['cw']['robust_acc'], n)} | {_pct(report['worst_case']['robust_acc'], n)} | "
            f"{', '.join(map(str, seconds))} |"
        )
    print()
    print("| arm | eps mean ± std (/255), per epoch | Spearman(eps, cue), last epoch | rose / fell, last epoch |")
    print("| --- | --- | --- | --- |")
    for arm in arms:
        telemetry = _lines(root / arm / "telemetry.jsonl")
        budgets = ", ".join(f"{255 * t['eps']['mean']:.2f} ± {255 * t['eps']['std']:.2f}" for t in telemetry)
        last = telemetry[-1]
        cues = last.get("cues") or {}
        spearman = ", ".join(
            f"{name} {c['spearman']:+.2f}" if c.get("spearman") is not None else f"{name} —"
            for name, c in cues.items()
        ) or "—"
        change = last.get("change")
        moved = f"{change['rose']:.2f} / {change['fell']:.2f}" if change else "—"
        print(f"| {arm} | {budgets} | {spearman} | {moved} |")


if __name__ == "__main__":
    main()
