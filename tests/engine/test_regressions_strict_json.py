"""Regression: the run folder's JSON is strict JSON; a missing or non-finite figure is ``null``.

``metrics.jsonl`` and the training state's history held ``NaN`` (the mean
sigma of a defense without one) and ``Infinity``, which Python's ``json``
writes by default but no strict reader accepts. Now every figure that is not
finite is written as ``null``, and the readers (``ades plot``, ``ades compare``,
the study table) take ``null`` as "not measured".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ades_core import RunConfig, build
from ades_core.engine.runfolder.atomic_files import append_jsonl, finite_or_none, strict_json, write_json
from ades_core.engine.trainer import Trainer
from ades_core.engine.runfolder.state_files import load_training_state, save_training_state, state_folder
from ades_core.evaluation.compare import seconds_per_epoch
from ades_core.evaluation.training_plots import plot_training_curves, read_metrics
from ades_core.study.runs import read_run


def _strict(text: str):
    """``json.loads`` that refuses the ``NaN``, ``Infinity`` and ``-Infinity`` tokens."""

    def refuse(token: str):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------- the writers


def test_non_finite_floats_become_null_at_any_depth():
    record = {"a": math.nan, "b": [1.0, math.inf, (-math.inf, 2)], "c": {"d": math.nan}, "e": "nan", "f": 3}
    assert finite_or_none(record) == {"a": None, "b": [1.0, None, [None, 2]], "c": {"d": None}, "e": "nan", "f": 3}
    assert _strict(strict_json(record)) == finite_or_none(record)


def test_jsonl_lines_and_json_files_are_strict(tmp_path):
    append_jsonl(tmp_path / "m.jsonl", {"epoch": 1, "sigma_mean": math.nan, "eps_min": math.inf})
    write_json(tmp_path / "c.json", {"x": -math.inf})
    assert _strict((tmp_path / "m.jsonl").read_text()) == {"epoch": 1, "sigma_mean": None, "eps_min": None}
    assert _strict((tmp_path / "c.json").read_text()) == {"x": None}


def test_the_state_file_is_strict_and_other_non_finite_floats_round_trip(tmp_path):
    state = {"position": {"epoch": 1}, "scale": math.inf, "floor": -math.inf, "ratio": math.nan}
    save_training_state(tmp_path, state)
    _strict((state_folder(tmp_path) / "state.json").read_text())
    back = load_training_state(tmp_path)
    assert back["scale"] == math.inf and back["floor"] == -math.inf and math.isnan(back["ratio"])


# ---------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def pgd_at_run(cifar10_dir, tmp_path_factory) -> tuple[Path, list]:
    """One epoch of pgd-at (no sigma: its mean sigma is not a number) on 32 CIFAR-10 images."""
    config = RunConfig.from_dict({
        "defense": "pgd-at", "device": "cpu", "model": {"backbone": "ades_cnn_small"},
        "data": {"dataset": "imagefolder", "data_dir": str(cifar10_dir), "train_subset": 32,
                 "test_subset": 8, "batch_size": 16},
        "attack": {"steps": 1}, "optim": {"epochs": 1}, "eval": {"steps": 1},
    })  # fmt: skip
    out = tmp_path_factory.mktemp("strict") / "run"
    history = Trainer(build(config), progress=False).fit(out)
    return out, history


def test_metrics_lines_are_strict_json_with_null_for_the_missing_sigma(pgd_at_run):
    out, history = pgd_at_run
    (line,) = (out / "metrics.jsonl").read_text().splitlines()
    record = _strict(line)
    assert record["sigma_mean"] is None
    assert history[-1] == record  # what fit returns is what the file holds
    _strict((out / "config.json").read_text())
    for text in (out / "telemetry.jsonl").read_text().splitlines():
        _strict(text)


def test_the_checkpoint_history_is_strict_json_with_null(pgd_at_run):
    out, _ = pgd_at_run
    document = _strict((state_folder(out) / "state.json").read_text())
    assert document["state"]["history"][0]["sigma_mean"] is None
    assert load_training_state(out)["history"][0]["sigma_mean"] is None


def test_a_resumed_run_keeps_null_in_metrics_and_history(pgd_at_run):
    out, history = pgd_at_run
    config = RunConfig.from_dict({k: v for k, v in _strict((out / "config.json").read_text()).items()
                                  if k != "resolved"})
    resumed = Trainer(build(config), progress=False, resume=True).fit(out)  # all epochs done: nothing to train
    assert resumed == history
    assert _strict((out / "metrics.jsonl").read_text())["sigma_mean"] is None


def test_the_readers_take_null(pgd_at_run, tmp_path):
    out, history = pgd_at_run
    records = read_metrics(out)  # ades plot
    assert records[0]["sigma_mean"] is None
    assert plot_training_curves(records, tmp_path / "curves.png").stat().st_size > 0
    assert seconds_per_epoch(out) == pytest.approx(history[0]["train_seconds"])  # ades compare
    run = read_run("pgd-at", 0, out)  # the study table
    assert run.status == "trained" and run.values["eps_mean"] == pytest.approx(8 / 255)
    assert torch.isfinite(torch.tensor(run.values["seconds_per_epoch"]))
