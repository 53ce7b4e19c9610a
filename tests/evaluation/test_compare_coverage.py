"""``ades compare`` says which checks did not run and what the worst case covers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core.evaluation.compare import (
    as_dicts,
    cell,
    check_notes,
    compare_row,
    compare_rows,
    to_markdown,
    worst_case_notes,
)

RESULTS = Path(__file__).parents[2] / "docs" / "results"


def _check(name: str, status: str) -> dict:
    return {"name": name, "status": status, "passed": status == "passed", "message": f"{name} {status}", "details": {}}


def _report(folder: Path, *, attacks: list[str], n: int, checks: list[dict]) -> Path:
    rows = [{"name": a, "robust_acc": 0.4, "seconds": 1.0} for a in attacks]
    payload = {
        "format": "ades-eval", "version": 1, "defense": folder.name, "model": str(folder / "model.safetensors"),
        "run_dir": str(folder), "n": n, "eps": 8 / 255, "clean_acc": 0.8, "attacks": rows,
        "worst_case": {"name": "worst-case", "robust_acc": 0.35, "n": n, "settings": {"attacks": attacks}},
        "checks": checks, "warnings": [c["message"] for c in checks if c.get("status") == "failed"],
    }
    folder.mkdir(parents=True)
    (folder / "eval.json").write_text(json.dumps(payload))
    return folder


FOUR_PASSED = [_check(n, "passed") for n in ("zero-gradients", "eps-monotone", "more-steps", "large-eps")]


@pytest.fixture
def runs(tmp_path):
    full = _report(tmp_path / "pgd-at", attacks=["pgd20", "cw", "autoattack"], n=1000,
                   checks=[*FOUR_PASSED, _check("black-box", "passed")])
    no_square = _report(tmp_path / "ades", attacks=["pgd20", "cw", "autoattack"], n=1000,
                        checks=[*FOUR_PASSED, _check("black-box", "not-run")])
    return full, no_square


def test_the_checks_cell_counts_passed_and_names_what_did_not_run(runs):
    full, no_square = compare_rows(runs)
    assert cell(full, "checks") == "5 passed"
    assert cell(no_square, "checks") == "4 passed, 1 not run (black-box)"
    assert [c["status"] for c in as_dicts([no_square])[0]["checks"]][-1] == "not-run"
    assert check_notes([full, no_square]) == [
        "checks (pgd-at): 5 passed",
        "checks (ades): 4 passed, 1 not run (black-box)",
    ]


def test_a_skipped_check_of_an_older_eval_json_shows_as_not_run(tmp_path):
    legacy = [{"name": "black-box", "passed": True, "message": "skipped: ...", "details": {"skipped": True}},
              {"name": "large-eps", "passed": False, "message": "...", "details": {}}]
    row = compare_row(_report(tmp_path / "old", attacks=["pgd20"], n=10, checks=legacy))
    assert cell(row, "checks") == "1 failed (large-eps), 1 not run (black-box)"


def test_an_evaluation_without_checks_says_none_ran(tmp_path):
    row = compare_row(_report(tmp_path / "bare", attacks=["pgd20"], n=10, checks=[]))
    assert cell(row, "checks") == "none run"


def test_the_worst_case_note_names_its_attacks_and_images(runs, tmp_path):
    rows = compare_rows(runs)
    assert worst_case_notes(rows) == ["worst-case over pgd20, cw, autoattack on n=1000"]
    fewer = compare_row(_report(tmp_path / "cheap", attacks=["pgd20", "cw"], n=250, checks=FOUR_PASSED))
    assert worst_case_notes([*rows, fewer]) == [
        "worst-case (pgd-at) over pgd20, cw, autoattack on n=1000",
        "worst-case (ades) over pgd20, cw, autoattack on n=1000",
        "worst-case (cheap) over pgd20, cw on n=250",
    ]


def test_the_markdown_table_carries_checks_and_coverage(runs):
    table = to_markdown(compare_rows(runs))
    assert "worst-case over pgd20, cw, autoattack on n=1000" in table.splitlines()[0]
    assert "| method | run | norm, eps | weights | clean | PGD-20 | CW | AutoAttack | worst-case | n | s/epoch | checks |" in table
    assert "| 4 passed, 1 not run (black-box) |" in table


def test_the_compare_command_prints_checks_and_coverage(runs, tmp_path):
    markdown = tmp_path / "table.md"
    result = CliRunner().invoke(cli, ["compare", *map(str, runs), "--markdown", str(markdown)])
    assert result.exit_code == 0, result.output
    assert "checks (ades): 4 passed, 1 not run (black-box)" in result.output
    assert "worst-case over pgd20, cw, autoattack on n=1000" in result.output
    assert "1 not run (black-box)" in markdown.read_text()


def test_the_recorded_evaluations_say_their_worst_cases_differ():
    # Only the pgd-at evaluation ran AutoAttack: its worst case is over more attacks.
    rows = compare_rows([RESULTS / "pgd-at.eval.json", RESULTS / "ades.eval.json"])
    assert worst_case_notes(rows) == [
        "worst-case (pgd-at) over pgd20, cw, autoattack on n=1000",
        "worst-case (ades) over pgd20, cw on n=1000",
    ]
    assert [cell(r, "checks") for r in rows] == ["5 passed", "5 passed"]
