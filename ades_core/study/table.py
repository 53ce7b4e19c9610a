"""The study's table: per arm, mean and spread over seeds and the paired difference to the reference.

The study file's ``comparisons`` add paired differences between other arms
(an arm against its controls), computed the same way.

:func:`study_results` reads every run folder of a study and returns the
JSON-ready record written to ``<out>/study.json``; :func:`render_markdown`
turns it into ``<out>/study.md``. Only finished runs (trained and evaluated)
enter the accuracies; a trained run without a current evaluation still
gives its budgets and seconds. Every number is traceable: per arm the JSON
lists each run's folder, status, per-seed values and the file each value
came from.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ades_core.study.learned import summarise_learned
from ades_core.study.runs import (
    AUTOATTACK,
    CLEAN,
    EPS_MEAN,
    EPS_STD,
    SECONDS,
    WORST,
    RunResult,
    read_run,
)
from ades_core.study.spec import StudySpec
from ades_core.study.stats import mean_std, paired_difference

FORMAT = "ades-study"
VERSION = 1
CONFIDENCE = 0.95


def metric_names(spec: StudySpec) -> list[str]:
    """The table's metrics, in column order: clean, each attack, autoattack, worst case, eps, seconds."""
    names = [CLEAN, *spec.attacks]
    if spec.autoattack is not None:
        names.append(AUTOATTACK)
    return [*names, WORST, EPS_MEAN, EPS_STD, SECONDS]


def metric_unit(name: str) -> str:
    """``accuracy`` (a fraction, shown in %), ``eps`` (pixel scale, shown in /255) or ``seconds``."""
    return {EPS_MEAN: "eps", EPS_STD: "eps", SECONDS: "seconds"}.get(name, "accuracy")


def _paired_differences(spec: StudySpec, runs: list[RunResult], against: list[RunResult]) -> dict[str, Any]:
    """Per metric, ``runs - against`` paired by seed with its t interval (no interval below 2 pairs)."""
    differences: dict[str, Any] = {}
    for name in metric_names(spec):
        mine = {r.seed: r.values[name] for r in runs if name in r.values}
        theirs = {r.seed: r.values[name] for r in against if name in r.values}
        common = sorted(set(mine) & set(theirs))
        if len(common) >= 2:
            differences[name] = paired_difference(mine, theirs, confidence=CONFIDENCE).to_dict()
        else:
            differences[name] = {"n": len(common), "seeds": common,
                                 "differences": [mine[s] - theirs[s] for s in common],
                                 "mean": None, "std": None, "t": None, "low": None, "high": None,
                                 "confidence": CONFIDENCE}
    return differences


def _arm_record(spec: StudySpec, arm: str, runs: list[RunResult], reference: list[RunResult] | None) -> dict:
    metrics: dict[str, Any] = {}
    for name in metric_names(spec):
        per_seed = {r.seed: r.values[name] for r in runs if name in r.values}
        if not per_seed:
            metrics[name] = {"n": 0, "seeds": [], "values": [], "mean": None, "std": None}
            continue
        mean, std = mean_std(list(per_seed.values()))
        metrics[name] = {"n": len(per_seed), "seeds": list(per_seed), "values": list(per_seed.values()),
                         "mean": mean, "std": std}
    return {
        "options": spec.arm_options(arm),
        "runs": [r.to_dict() for r in runs],
        "metrics": metrics,
        "vs_reference": None if reference is None else _paired_differences(spec, runs, reference),
    }


def study_results(spec: StudySpec) -> dict[str, Any]:
    """Read every run of ``spec`` and summarise it (the content of ``study.json``)."""
    runs = {arm: [read_run(arm, seed, spec.run_folder(arm, seed)) for seed in spec.seeds] for arm in spec.arm_names}
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": spec.name,
        "description": spec.description,
        "study_file": None if spec.source is None else str(spec.source),
        "out": str(spec.out),
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "reference": spec.reference,
        "seeds": list(spec.seeds),
        "eval": {"attacks": list(spec.attacks), "options": dict(spec.eval_options),
                 "autoattack": None if spec.autoattack is None else
                 {"arms": list(spec.autoattack.arms), "seeds": list(spec.autoattack.seeds), "n": spec.autoattack.n}},
        "metrics": [{"name": m, "unit": metric_unit(m)} for m in metric_names(spec)],
        "confidence": CONFIDENCE,
        "arms": {
            arm: _arm_record(spec, arm, runs[arm], None if arm == spec.reference else runs[spec.reference])
            for arm in spec.arm_names
        },
        "comparisons": [
            {"arm": arm, "against": against, "differences": _paired_differences(spec, runs[arm], runs[against])}
            for arm, against in spec.comparisons
        ],
        "learned": {
            arm: summarise_learned(r.folder for r in runs[arm] if r.status in ("trained", "finished"))
            for arm in spec.arm_names
        },
    }


# ---------------------------------------------------------------- markdown


def _scale(name: str) -> float:
    return {"accuracy": 100.0, "eps": 255.0, "seconds": 1.0}[metric_unit(name)]


def _header(name: str) -> str:
    unit = metric_unit(name)
    label = {EPS_MEAN: "eps mean", EPS_STD: "eps spread", SECONDS: "s/epoch"}.get(name, name)
    return f"{label} ({'%' if unit == 'accuracy' else '/255' if unit == 'eps' else 's'})"


def _cell(summary: Mapping[str, Any], name: str, row_n: int) -> str:
    """``mean ± sd``; ``(n=k)`` added where fewer seeds hold the metric than the row's ``row_n``."""
    if summary.get("mean") is None:
        return "—"
    scale = _scale(name)
    text = f"{scale * summary['mean']:.2f}"
    if summary.get("std") is not None:
        text += f" ± {scale * summary['std']:.2f}"
    if summary.get("n", row_n) < row_n:
        text += f" (n={summary['n']})"
    return text


def _autoattack_note(evaluation: Mapping[str, Any]) -> list[str]:
    """Say where the AutoAttack column comes from: fewer runs, fewer images, not in the worst case."""
    plan = evaluation.get("autoattack")
    if not plan:
        return []
    def images(n: int | None) -> str:
        return "the evaluation's default number of" if n is None else f"{n:,}"

    note = (f"AutoAttack (the `autoattack` column) ran only for arms {', '.join(plan['arms'])}, seeds "
            f"{plan['seeds']}, on {images(plan.get('n'))} test images (each run's `eval-autoattack.json`); the "
            f"other attacks ran on {images(evaluation.get('options', {}).get('n'))} test images. Its figures are single runs where one seed ran, and the worst "
            "case is over the other attacks only: compare AutoAttack with the other columns as a check on "
            "them, not as a paired result.")
    return [note, ""]


def _difference_cell(diff: Mapping[str, Any], name: str) -> str:
    if diff.get("mean") is None:
        return f"— (n={diff.get('n', 0)})"
    scale = _scale(name)
    return f"{scale * diff['mean']:+.2f} [{scale * diff['low']:+.2f}, {scale * diff['high']:+.2f}]"


def _relative(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return path


def _comparison_lines(comparisons: list[Mapping[str, Any]], names: list[str], confidence: int) -> list[str]:
    """The study file's further comparisons: one row ``arm − against`` each, cells as the reference's."""
    if not comparisons:
        return []
    lines = ["", "## Paired differences between arms", "",
             f"The study file's `comparisons`: per seed `arm − against`, the mean over the n seeds both finished "
             f"and its {confidence}% t interval, as above.", "",
             "| arm − against | n | " + " | ".join(_header(n) for n in names) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for comparison in comparisons:
        diffs = comparison["differences"]
        paired = max((d["n"] for d in diffs.values()), default=0)
        lines.append(f"| {comparison['arm']} − {comparison['against']} | {paired} | "
                     + " | ".join(_difference_cell(diffs[n], n) for n in names) + " |")
    return lines


def _learned_lines(learned: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """The "what the scheduler learned" table: per arm, the last epoch's Spearman of eps with each
    cue and the held-out fit to the measured target, mean ± sd over the trained seeds (n)."""
    columns = sorted({name for figures in learned.values() for name in figures},
                     key=lambda name: (not name.startswith("eps~"), name))
    if not columns:
        return []
    lines = ["", "## What the scheduler learned", "",
             "Last training epoch (`telemetry.jsonl`): Spearman's rho of the per-sample budgets with each cue "
             "(`eps~cue`), and the held-out R^2 and Spearman of the scheduler's fit to the measured breaking "
             "radius (objectives that fit one); mean ± sd over the trained seeds (n).", "",
             "| arm | " + " | ".join(columns) + " |", "| --- | " + " | ".join("---:" for _ in columns) + " |"]
    for arm, figures in learned.items():
        if not figures:
            continue
        cells = [f"{figures[c]['mean']:+.2f} ± {figures[c]['sd']:.2f} ({figures[c]['n']})" if c in figures else "—"
                 for c in columns]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(results: Mapping[str, Any]) -> str:
    """``study.md``: the means table, the paired-differences table, the runs with their folders."""
    names = [m["name"] for m in results["metrics"]]
    out = Path(results["out"])
    reference = results["reference"]
    lines = [f"# Study: {results['name']}", ""]
    if results.get("description"):
        lines += [results["description"].strip(), ""]
    lines += [
        f"Study file `{results['study_file']}`, folder `{results['out']}`, seeds {results['seeds']}, "
        f"written {results['written']}. Accuracies in %, budgets in units of 1/255, seconds per training "
        f"epoch; mean ± sample standard deviation over the seeds that finished (n). Raw numbers: `study.json`.",
        "",
        *_autoattack_note(results.get("eval") or {}),
        "## Mean over seeds",
        "",
        "| arm | n | " + " | ".join(_header(n) for n in names) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for arm, record in results["arms"].items():
        finished = sum(1 for r in record["runs"] if r["status"] == "finished")
        cells = [_cell(record["metrics"][n], n, finished) for n in names]
        lines.append(f"| {arm} | {finished} | " + " | ".join(cells) + " |")
    confidence = round(100 * results["confidence"])
    lines += [
        "",
        f"## Paired difference to {reference}",
        "",
        f"Per seed `arm − {reference}`, then the mean over the n seeds both finished and its {confidence}% "
        "interval `mean ± t(n−1) · sd / √n` (Student's t, n−1 degrees of freedom); `—` below 2 paired seeds. "
        "Accuracies in percentage points.",
        "",
        "| arm | n | " + " | ".join(_header(n) for n in names) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for arm, record in results["arms"].items():
        if record["vs_reference"] is None:
            continue
        diffs = record["vs_reference"]
        paired = max((d["n"] for d in diffs.values()), default=0)
        lines.append(f"| {arm} | {paired} | " + " | ".join(_difference_cell(diffs[n], n) for n in names) + " |")
    lines += _comparison_lines(results.get("comparisons") or [], names, confidence)
    lines += _learned_lines(results.get("learned") or {})
    lines += ["", "## Runs", "", "| arm | seed | status | folder | " + " | ".join(names) + " |",
              "| --- | ---: | --- | --- | " + " | ".join("---:" for _ in names) + " |"]
    for arm, record in results["arms"].items():
        for run in record["runs"]:
            values = [f"{_scale(n) * run['values'][n]:.2f}" if n in run["values"] else "—" for n in names]
            lines.append(f"| {arm} | {run['seed']} | {run['status']} | `{_relative(run['folder'], out)}` | "
                         + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_table(spec: StudySpec, *, plot: bool = True) -> dict[str, Any]:
    """Write ``study.json``, ``study.md`` and (``plot``) ``study.png`` into the study folder; return the results."""
    from ades_core.engine.runfolder.atomic_files import atomic_write

    results = study_results(spec)
    spec.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, allow_nan=False, default=str) + "\n"
    atomic_write(spec.out / "study.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    markdown = render_markdown(results)
    atomic_write(spec.out / "study.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    if plot:
        from ades_core.study.plot import plot_study

        plot_study(results, spec.out / "study.png")
    return results

