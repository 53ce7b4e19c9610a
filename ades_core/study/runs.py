"""What a study's run folder holds: how far its run got, and the numbers it produced.

A run folder ``<out>/<arm>/seed<k>/`` is an ``ades run`` folder (see
:mod:`ades_core.engine.runfolder`) plus the study's files::

    eval.json              the study's evaluation (``ades eval``), written when it finishes
    eval.resume.json       the evaluation's resume state while it runs (removed when it finishes)
    eval-autoattack.json   AutoAttack on the smaller set, for the runs in ``[autoattack]``
    train.log, eval.log, autoattack.log   each command's stdout and stderr, appended per launch

Training has finished when ``metrics.jsonl``'s last line is the last epoch
(``epoch`` equal to ``config.json``'s ``resolved.epochs``, the passes the
run makes), ``model.safetensors`` exists and the saved training state
(``checkpoint/state.json``) is at the end of that epoch. An evaluation is current when
its report exists and is not older than the model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs

from ades_core.engine.runfolder.model_files import MODEL_FILE
from ades_core.engine.runfolder import CONFIG_FILE, METRICS_FILE
from ades_core.engine.runfolder.state_files import STATE_DIR

EVAL_REPORT = "eval.json"
AUTOATTACK_REPORT = "eval-autoattack.json"
STATE_FILE = "state.json"
LOGS = {"train": "train.log", "eval": "eval.log", "autoattack": "autoattack.log"}

CLEAN, WORST, AUTOATTACK = "clean", "worst-case", "autoattack"
EPS_MEAN, EPS_STD, SECONDS = "eps_mean", "eps_std", "seconds_per_epoch"


def resume_state_file(report: Path) -> Path:
    """``eval.json`` -> ``eval.resume.json``: where ``ades eval --resume`` finds its state."""
    stem = report.name[: -len(".json")] if report.name.endswith(".json") else report.name
    return report.with_name(f"{stem}.resume.json")


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` (an unreadable line ends the list)."""
    records: list[dict[str, Any]] = []
    try:
        lines = (Path(folder) / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if isinstance(record, dict):
            records.append(record)
    return records


def planned_epochs(folder: Path) -> int | None:
    """The passes over the data the run makes (``resolved.epochs`` of its ``config.json``)."""
    config = _read_json(Path(folder) / CONFIG_FILE)
    if not isinstance(config, dict):
        return None
    resolved = config.get("resolved") or {}
    epochs = resolved.get("epochs", (config.get("optim") or {}).get("epochs"))
    return epochs if isinstance(epochs, int) else None


def saved_position(folder: Path) -> dict[str, Any] | None:
    """The position of the saved training state (``{"epoch", "step", ...}``), or None without one."""
    state = _read_json(Path(folder) / STATE_DIR / STATE_FILE)
    position = (state.get("state") or {}).get("position") if isinstance(state, dict) else None
    return position if isinstance(position, dict) else None


def training_finished(folder: Path) -> bool:
    """Whether the run in ``folder`` has trained its last epoch, written its model and saved its final state.

    The saved state decides when there is one: a run killed after writing its
    last epoch's metrics and model but before its final state is saved is
    resumed from the earlier state (and redoes that epoch), so it is not finished.
    """
    folder = Path(folder)
    epochs, records = planned_epochs(folder), read_metrics(folder)
    if epochs is None or not records or not (folder / MODEL_FILE).is_file():
        return False
    position = saved_position(folder)
    if position is not None and (position.get("epoch"), position.get("step")) != (epochs, 0):
        return False
    return records[-1].get("epoch") == epochs


def has_training_state(folder: Path) -> bool:
    """Whether ``ades run --resume`` has a saved state to continue from."""
    folder = Path(folder)
    return (folder / CONFIG_FILE).is_file() and (folder / STATE_DIR / STATE_FILE).is_file()


def report_current(folder: Path, report: str) -> bool:
    """Whether ``folder/report`` exists and is not older than the model it evaluates."""
    path, model = Path(folder) / report, Path(folder) / MODEL_FILE
    if not path.is_file() or not model.is_file() or _read_json(path) is None:
        return False
    return path.stat().st_mtime >= model.stat().st_mtime


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@attrs.frozen(kw_only=True)
class RunResult:
    """The numbers of one (arm, seed) run, as far as its folder holds them.

    Attributes:
        status: ``finished`` (trained and evaluated), ``trained`` (no current
            evaluation yet), ``started`` (a run folder, training unfinished) or
            ``missing`` (no run).
        values: metric name -> value. Accuracies (``clean``, each attack's
            label, ``autoattack``, ``worst-case``) are fractions in [0, 1];
            ``eps_mean`` and ``eps_std`` are the last epoch's per-sample budget
            mean and spread in [0, 1] pixel scale; ``seconds_per_epoch`` is the
            mean training time of an epoch in seconds. Only metrics the folder
            holds are present; accuracies only when the run is ``finished``.
        sources: metric name -> the file it was read from.
    """

    arm: str
    seed: int
    folder: Path
    status: str
    values: dict[str, float] = attrs.field(factory=dict)
    sources: dict[str, str] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "folder": str(self.folder), "status": self.status,
                "values": dict(self.values), "sources": dict(self.sources)}


def read_run(arm: str, seed: int, folder: Path) -> RunResult:
    """Read one run folder's numbers (see :class:`RunResult`); a missing or partial folder is no error."""
    folder = Path(folder)
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    if not training_finished(folder):
        status = "started" if (folder / CONFIG_FILE).is_file() else "missing"
        return RunResult(arm=arm, seed=seed, folder=folder, status=status)
    records = read_metrics(folder)
    metrics_path = str(folder / METRICS_FILE)
    for key in (EPS_MEAN, EPS_STD):
        if (value := _finite(records[-1].get(key))) is not None:
            values[key], sources[key] = value, metrics_path
    seconds = [s for r in records if (s := _finite(r.get("train_seconds"))) is not None]
    if seconds:
        values[SECONDS], sources[SECONDS] = math.fsum(seconds) / len(seconds), metrics_path
    if not report_current(folder, EVAL_REPORT):
        return RunResult(arm=arm, seed=seed, folder=folder, status="trained", values=values, sources=sources)
    report_path = folder / EVAL_REPORT
    report = _read_json(report_path)
    rows = [(CLEAN, report.get("clean_acc"))]
    rows += [(row.get("name"), row.get("robust_acc")) for row in report.get("attacks") or [] if isinstance(row, dict)]
    rows.append((WORST, (report.get("worst_case") or {}).get("robust_acc")))
    for name, value in rows:
        if isinstance(name, str) and (value := _finite(value)) is not None:
            values[name], sources[name] = value, str(report_path)
    if report_current(folder, AUTOATTACK_REPORT):
        aa_path = folder / AUTOATTACK_REPORT
        for row in (_read_json(aa_path) or {}).get("attacks") or []:
            if isinstance(row, dict) and str(row.get("name", "")).startswith(AUTOATTACK):
                if (value := _finite(row.get("robust_acc"))) is not None:
                    values[AUTOATTACK], sources[AUTOATTACK] = value, str(aa_path)
    return RunResult(arm=arm, seed=seed, folder=folder, status="finished", values=values, sources=sources)
