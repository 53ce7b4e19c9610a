"""The paper-style comparison table across runs, from their ``eval.json`` and ``metrics.jsonl``.

Besides the accuracies, each row says what stands behind them: which
gradient-masking checks passed, failed or did not run (a check that did not
run vouches for nothing and is never shown as passed), and which attacks and
how many images the worst case covers (:func:`worst_case_notes`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from ades_core.config import format_eps
from ades_core.engine.runfolder import METRICS_FILE
from ades_core.norms import NORMS
from ades_core.evaluation.masking_verdicts import CheckResult, summarise_checks
from ades_core.evaluation.report import read_report
from ades_core.engine.runfolder.model_files import WEIGHT_FILES
from ades_core.evaluation.sources import EVAL_FILE

RUN_EVAL_FILES: tuple[str, ...] = tuple(
    EVAL_FILE if weights == "last" else file.replace(".safetensors", f".{EVAL_FILE}")
    for weights, file in WEIGHT_FILES.items()
)
"""The reports ``ades eval RUN --weights last|best|ema`` writes into a run folder, in that order."""

COLUMNS: tuple[tuple[str, str], ...] = (
    ("method", "method"),
    ("run", "run"),
    ("threat", "norm, eps"),
    ("weights", "weights"),
    ("clean", "clean"),
    ("pgd20", "PGD-20"),
    ("cw", "CW"),
    ("autoattack", "AutoAttack"),
    ("worst_case", "worst-case"),
    ("n", "n"),
    ("seconds_per_epoch", "s/epoch"),
)
"""The terminal table's columns; each row's checks go on a line of their own below it (:func:`check_notes`)."""

MARKDOWN_COLUMNS: tuple[tuple[str, str], ...] = (*COLUMNS, ("checks", "checks"))
"""The Markdown table's columns: the terminal ones and the checks summary."""


@attrs.frozen(kw_only=True)
class CompareRow:
    """One run: accuracies in [0, 1] (``None`` where not measured), training seconds per epoch.

    ``checks``: the gradient-masking checks of the evaluation (empty when none
    ran); ``worst_case_attacks``: the attacks the worst case is taken over.
    """

    method: str
    run: str
    eps: float
    weights: str = "last"
    """Which of the run's weights were evaluated: ``last``, ``best`` (validation) or ``ema``
    (reports written before the choice existed evaluated ``last``)."""
    n: int
    clean: float
    pgd20: float | None
    cw: float | None
    autoattack: float | None
    worst_case: float | None
    seconds_per_epoch: float | None
    warnings: tuple[str, ...] = ()
    attack_seconds: dict[str, float] = attrs.field(factory=dict)
    checks: tuple[CheckResult, ...] = ()
    worst_case_attacks: tuple[str, ...] = ()
    norm: str = "linf"

    @property
    def threat(self) -> str:
        """The threat model as the table shows it: ``linf 8/255``, ``l2 0.5``."""
        return f"{self.norm} {format_eps(self.eps, self.norm)}"


def seconds_per_epoch(run_dir: str | Path | None) -> float | None:
    """Mean ``train_seconds`` over the epochs of ``metrics.jsonl``, or ``None``."""
    if run_dir is None:
        return None
    metrics = Path(run_dir) / METRICS_FILE
    if not metrics.is_file():
        return None
    values = []
    for line in metrics.read_text().splitlines():
        if line.strip():
            seconds = json.loads(line).get("train_seconds")
            if isinstance(seconds, (int, float)) and math.isfinite(seconds):
                values.append(float(seconds))
    return sum(values) / len(values) if values else None


def compare_row(path: str | Path) -> CompareRow:
    """The row of one run folder (or ``eval.json`` file)."""
    report = read_report(path)
    attacks = {a["name"]: a for a in report.get("attacks", [])}

    def acc(name: str) -> float | None:
        return attacks[name]["robust_acc"] if name in attacks else None

    run_dir = report.get("run_dir")
    if run_dir is None and Path(path).is_dir():
        run_dir = str(path)
    worst = report.get("worst_case")
    return CompareRow(
        method=report.get("defense") or "?",
        run=Path(run_dir or report.get("model", "?")).name,
        weights=report.get("weights") or ("—" if report.get("external_model") else "last"),
        eps=report["eps"],
        n=report["n"],
        clean=report["clean_acc"],
        pgd20=acc("pgd20"),
        cw=acc("cw"),
        autoattack=acc("autoattack"),
        worst_case=None if worst is None else worst["robust_acc"],
        seconds_per_epoch=seconds_per_epoch(run_dir),
        warnings=tuple(report.get("warnings", [])),
        attack_seconds={a["name"]: a["seconds"] for a in report.get("attacks", [])},
        checks=tuple(CheckResult.from_dict(c) for c in report.get("checks", [])),
        worst_case_attacks=() if worst is None else _worst_case_attacks(worst, attacks),
        norm=report.get("norm", "linf"),  # reports from before L2 are L-inf
    )


def _worst_case_attacks(worst: dict[str, Any], attacks: dict[str, Any]) -> tuple[str, ...]:
    """``worst_case.settings.attacks``; every attack row for files that do not list them."""
    listed = (worst.get("settings") or {}).get("attacks")
    return tuple(listed) if listed is not None else tuple(attacks)


def run_reports(path: str | Path) -> list[Path]:
    """The evaluations a path stands for: a run folder's ``eval.json`` and those of its best and
    EMA weights (``model-best.eval.json``, ``model-ema.eval.json``) where present; a file itself."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    found = [path / name for name in RUN_EVAL_FILES if (path / name).is_file()]
    return found or [path]


def compare_rows(paths: Sequence[str | Path]) -> list[CompareRow]:
    """One row per evaluation: a run folder gives a row for each of its evaluated weights (:func:`run_reports`)."""
    return [compare_row(report) for p in paths for report in run_reports(p)]


def cell(row: CompareRow, key: str) -> str:
    """The text of one table cell: percentages with one decimal, '—' where not measured."""
    value = getattr(row, key)
    if value is None:
        return "—"
    if key in ("method", "run", "threat", "weights"):
        return str(value)
    if key == "n":
        return str(value)
    if key == "seconds_per_epoch":
        return f"{value:.1f}"
    if key == "checks":
        return summarise_checks(value)
    return f"{100 * value:.1f}%"


def worst_case_notes(rows: Sequence[CompareRow]) -> list[str]:
    """What each worst case covers: ``"worst-case over pgd20, cw, autoattack on n=1000"``.

    One line when every row with a worst case has the same attacks and ``n``,
    else one line per such row, naming its run.
    """
    covered = [r for r in rows if r.worst_case is not None]

    def coverage(row: CompareRow) -> str:
        return f"over {', '.join(row.worst_case_attacks) or 'no attack'} on n={row.n}"

    if len({coverage(r) for r in covered}) == 1:
        return [f"worst-case {coverage(covered[0])}"]
    return [f"worst-case ({r.run}) {coverage(r)}" for r in covered]


def check_notes(rows: Sequence[CompareRow]) -> list[str]:
    """One line per row: ``"checks (ades): 4 passed, 1 not run (black-box)"``."""
    return [f"checks ({r.run}): {summarise_checks(r.checks)}" for r in rows]


def to_markdown(rows: Sequence[CompareRow]) -> str:
    """A Markdown table (GitHub style) of ``rows``, with the budget and the worst case's coverage
    in a caption line, and each row's checks in its last column (:data:`MARKDOWN_COLUMNS`)."""
    budgets = sorted({f"{format_eps(r.eps, r.norm)} ({NORMS.get(r.norm).label})" for r in rows})
    lines = [
        f"Robust accuracy at eps {', '.join(budgets)}; worst-case counts a sample only if it "
        "is correct clean and under every attack run; " + "; ".join(worst_case_notes(rows) or ["no worst case"])
        + ". A check that did not run vouches for nothing.",
        "",
        "| " + " | ".join(title for _, title in MARKDOWN_COLUMNS) + " |",
        "| " + " | ".join("---" for _ in MARKDOWN_COLUMNS) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row, key) for key, _ in MARKDOWN_COLUMNS) + " |")
    flagged = [(r, w) for r in rows for w in r.warnings]
    if flagged:
        lines.append("")
        lines.extend(f"- warning ({r.run}): {w}" for r, w in flagged)
    return "\n".join(lines) + "\n"


def mixed_norms_note(rows: Sequence[CompareRow]) -> str | None:
    """A warning line when the rows were evaluated in different norms (their numbers do not compare)."""
    norms = sorted({r.norm for r in rows})
    if len(norms) < 2:
        return None
    return f"the runs were evaluated in different norms ({', '.join(norms)}): compare rows of one norm only"


def as_dicts(rows: Sequence[CompareRow]) -> list[dict[str, Any]]:
    """The rows for ``--json``; each check as in ``eval.json`` (with ``status``)."""
    return [attrs.asdict(r) | {"checks": [c.to_dict() for c in r.checks]} for r in rows]
