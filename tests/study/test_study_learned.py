"""The study table says what each arm's scheduler learned, from its runs' telemetry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ades_core.study.learned import learned_figures, summarise_learned
from ades_core.study.table import _learned_lines


def _telemetry(folder: Path, *records: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "telemetry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _record(grad: float, r2: float | None) -> dict:
    record = {"epoch": 2, "adaptive": True, "cues": {"grad": {"pearson": 0.0, "spearman": grad}}}
    if r2 is not None:
        record["target"] = {"r2": r2, "spearman": 2 * r2}
    return record


def test_the_last_epoch_gives_the_cue_correlations_and_the_fit():
    assert learned_figures(_record(-0.5, 0.1)) == {"eps~grad": -0.5, "target R^2": 0.1, "target Spearman": 0.2}
    assert learned_figures({"adaptive": False, "cues": {}}) == {}  # a fixed budget learned nothing
    assert learned_figures(None) == {}


def test_seeds_are_averaged_per_figure_by_hand(tmp_path):
    a = _telemetry(tmp_path / "a", _record(0.9, None), _record(-0.2, 0.1))  # the last line counts
    b = _telemetry(tmp_path / "b", _record(-0.4, 0.3))
    summary = summarise_learned([a, b, tmp_path / "missing"])
    assert summary["eps~grad"]["mean"] == pytest.approx(-0.3) and summary["eps~grad"]["n"] == 2
    assert summary["eps~grad"]["sd"] == pytest.approx(0.1414214, abs=1e-6)
    assert summary["target R^2"]["mean"] == pytest.approx(0.2)
    lines = _learned_lines({"pgd-at": {}, "ades": summary})
    assert "## What the scheduler learned" in lines
    assert lines[-1] == "| ades | -0.30 ± 0.14 (2) | +0.20 ± 0.14 (2) | +0.40 ± 0.28 (2) |"
    assert _learned_lines({"pgd-at": {}}) == []
