"""Budget telemetry: the statistics on known inputs, the per-sample buffers, the warnings,
and real runs (one line per epoch, a collapsing scheduler, a resume that matches)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from ades_cli.main import cli
from ades_core import RunConfig, build
from ades_core.engine.telemetry import (
    MIN_SPREAD_FRACTION,
    BudgetTelemetry,
    TelemetryError,
    average_ranks,
    change_fractions,
    histogram_counts,
    keep_finished_epochs,
    linear_quantiles,
    pearson,
    read_telemetry,
    spearman,
    spread_warning,
)
from ades_core.engine.trainer import Trainer
from ades_core.protocols import Budget, Cues, StepOutput

# ---------------------------------------------------------------- statistics on known inputs


def test_histogram_counts_equal_width_bins_with_the_top_edge_in_the_last_bin():
    values = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.99, 1.0])
    assert histogram_counts(values, 0.0, 1.0, 4).tolist() == [2, 1, 1, 2]


def test_histogram_counts_put_values_outside_the_range_in_the_edge_bins():
    values = torch.tensor([-0.2, 0.3, 1.3])
    assert histogram_counts(values, 0.0, 1.0, 2).tolist() == [2, 1]


def test_histogram_needs_a_range():
    with pytest.raises(ValueError, match="high > low"):
        histogram_counts(torch.zeros(3), 0.5, 0.5, 4)


def test_quantiles_interpolate_linearly_as_numpy():
    values = torch.arange(1.0, 11.0)  # 1..10: the q-quantile sits at position q * 9
    got = linear_quantiles(values, (0.05, 0.25, 0.5, 0.75, 0.95)).tolist()
    assert got == pytest.approx([1.45, 3.25, 5.5, 7.75, 9.55])


def test_pearson_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    # centred: (-1.5, -0.5, 0.5, 1.5) and (-1.5, 0.5, -0.5, 1.5): 4 / sqrt(5 * 5)
    assert pearson(a, torch.tensor([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)


def test_correlation_with_a_constant_is_undefined():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert pearson(a, torch.full((3,), 8 / 255)) is None
    assert spearman(torch.full((3,), 0.5), a) is None
    assert pearson(a[:1], a[:1]) is None


def test_tied_values_share_the_mean_of_their_ranks():
    values = torch.tensor([10.0, 20.0, 20.0, 5.0, 20.0])
    assert average_ranks(values).tolist() == [2.0, 4.0, 4.0, 1.0, 4.0]


def test_spearman_with_ties_by_hand():
    # ranks (1, 2.5, 2.5, 4) and (1, 2, 3, 4); centred products sum to 4.5; squares 4.5 and 5
    a, b = torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, b) == pytest.approx(4.5 / math.sqrt(4.5 * 5))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(-3, 3)), min_size=3, max_size=30).filter(
        lambda pairs: len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1
    )
)
def test_spearman_and_pearson_match_scipy_on_tied_integers(pairs):
    a = torch.tensor([float(x) for x, _ in pairs], dtype=torch.float64)
    b = torch.tensor([float(y) for _, y in pairs], dtype=torch.float64)
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-9)
    assert pearson(a, b) == pytest.approx(scipy_stats.pearsonr(a.numpy(), b.numpy()).statistic, abs=1e-9)


def test_change_fractions_count_rose_fell_and_stayed_within_the_tolerance():
    now = torch.tensor([1.0, 2.0, 3.0, 4.0005])
    before = torch.tensor([0.0, 2.0, 4.0, 4.0])
    got = change_fractions(now, before, tolerance=1e-3)
    assert got == {"rose": 0.25, "fell": 0.25, "stayed": 0.5, "compared": 4, "tolerance": 1e-3}


def test_spread_warning_fires_below_the_fraction_of_lam_only():
    lam = 8 / 255
    assert MIN_SPREAD_FRACTION == 0.02
    message = spread_warning(0.001 * lam, lam)
    assert message is not None and "budgets hardly differ" in message and "0.160/255" in message
    assert spread_warning(0.05 * lam, lam) is None
    assert spread_warning(0.0, 0.0) is None  # no adaptive range: nothing to spread


# ---------------------------------------------------------------- the per-sample buffers

EPS_MIN, EPS_MAX = 4 / 255, 12 / 255


def _step(idx: list[int], sigma: list[float], cues: list[list[float]] | None = None) -> tuple[StepOutput, torch.Tensor]:
    budget = Budget.from_sigma(torch.tensor(sigma), EPS_MIN, EPS_MAX)
    out = StepOutput(
        loss=torch.tensor(1.0),
        logits_adv=torch.zeros(len(idx), 2),
        budget=budget,
        cues=None if cues is None else Cues(torch.tensor(cues), ("grad", "entropy")),
    )
    return out, torch.tensor(idx)


def _epoch(telemetry: BudgetTelemetry, steps, epoch: int) -> dict:
    for idx, sigma, cues in steps:
        out, index = _step(idx, sigma, cues)
        telemetry.update(out, index)
    return telemetry.end_epoch(epoch)


FIRST = [
    ([0, 1, 2], [0.0, 0.4, 1.0], [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]),
    ([3, 4, 5], [0.3, 0.8, 0.6], [[0.2, 0.9], [0.8, 0.1], [0.6, 0.6]]),
]
SECOND = [  # samples 0 and 1 rise, 2 falls, 3 stays, 4 and 5 are not seen
    ([0, 1, 2, 3], [0.5, 1.0, 0.0, 0.3], [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.2, 0.9]]),
]


def test_an_epoch_record_holds_the_statistics_of_the_per_sample_budgets():
    telemetry = BudgetTelemetry(6, "cpu", seed=0, bins=4, sample_size=4)
    record = _epoch(telemetry, FIRST, epoch=0)
    sigma = np.array([0.0, 0.4, 1.0, 0.3, 0.8, 0.6])  # bins of width 0.25 in sigma: 1, 2, 1, 2
    eps = EPS_MIN + (EPS_MAX - EPS_MIN) * sigma
    assert record["epoch"] == 1 and record["samples"] == 6 and record["adaptive"]
    assert record["eps"]["mean"] == pytest.approx(eps.mean())
    assert record["eps"]["std"] == pytest.approx(eps.std())  # population std, as metrics.jsonl
    assert (record["eps"]["min"], record["eps"]["max"]) == pytest.approx((EPS_MIN, EPS_MAX))
    assert record["eps"]["quantiles"]["p50"] == pytest.approx(np.quantile(eps, 0.5))
    assert list(record["eps"]["quantiles"]) == ["p5", "p25", "p50", "p75", "p95"]
    assert record["histogram"] == {"low": EPS_MIN, "high": EPS_MAX, "counts": [1, 2, 1, 2]}
    grad = np.array([0.0, 0.5, 1.0, 0.2, 0.8, 0.6])
    assert record["cues"]["grad"]["pearson"] == pytest.approx(np.corrcoef(eps, grad)[0, 1], abs=1e-6)
    assert record["cues"]["grad"]["spearman"] == pytest.approx(scipy_stats.spearmanr(eps, grad).statistic, abs=1e-6)
    assert record["change"] is None  # nothing to compare with in the first epoch
    assert len(record["sample"]["idx"]) == 4 and record["sample"]["idx"] == sorted(record["sample"]["idx"])
    assert record["sample"]["eps"] == pytest.approx([eps[i] for i in record["sample"]["idx"]], rel=1e-6)
    assert record["sample"]["cues"]["grad"] == pytest.approx([grad[i] for i in record["sample"]["idx"]], rel=1e-6)
    json.dumps(record, allow_nan=False)  # strict JSON: no NaN anywhere


def test_the_next_epoch_compares_each_sample_with_its_last_budget():
    telemetry = BudgetTelemetry(6, "cpu", seed=0, bins=4, sample_size=6)
    first = _epoch(telemetry, FIRST, epoch=0)
    second = _epoch(telemetry, SECOND, epoch=1)
    assert second["samples"] == 4
    assert second["change"]["rose"] == 0.5 and second["change"]["fell"] == 0.25
    assert second["change"]["stayed"] == 0.25 and second["change"]["compared"] == 4
    assert second["sample"]["idx"] == [0, 1, 2, 3]  # the fixed sample, less those not seen
    assert first["sample"]["idx"] == list(range(6))


def test_the_last_value_of_a_sample_counts_and_a_non_finite_step_changes_nothing():
    telemetry = BudgetTelemetry(3, "cpu", bins=2)
    for sigma in ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]):  # a replayed minibatch: the last replay counts
        out, idx = _step([0, 1, 2], sigma)
        telemetry.update(out, idx, torch.tensor(True))
    out, idx = _step([0, 1, 2], [0.5, 0.5, 0.5])
    telemetry.update(out, idx, torch.tensor(False))
    record = telemetry.end_epoch(0)
    assert record["eps"]["min"] == pytest.approx(EPS_MAX) and record["histogram"]["counts"] == [0, 3]
    assert record["cues"] == {} and record["sample"]["cues"] == {}


def test_an_epoch_without_a_finite_step_records_no_statistics():
    telemetry = BudgetTelemetry(3, "cpu")
    out, idx = _step([0, 1, 2], [0.5, 0.5, 0.5])
    telemetry.update(out, idx, torch.tensor(False))
    record = telemetry.end_epoch(0)
    assert record["samples"] == 0 and record["eps"] is None and record["change"] is None


def test_fixed_budgets_use_the_range_from_zero_and_never_warn_about_spread():
    telemetry = BudgetTelemetry(4, "cpu", bins=4)
    out = StepOutput(loss=torch.tensor(1.0), logits_adv=torch.zeros(4, 2),
                     budget=Budget(torch.full((4,), 8 / 255), eps_min=8 / 255, eps_max=8 / 255))
    telemetry.update(out, torch.arange(4))
    record = telemetry.end_epoch(0)
    assert not record["adaptive"] and record["histogram"]["low"] == 0.0
    assert record["histogram"]["counts"] == [0, 0, 0, 4] and record["eps"]["std"] == 0.0
    assert telemetry.warnings() == []


def test_adaptive_budgets_without_spread_warn():
    telemetry = BudgetTelemetry(4, "cpu")
    out, idx = _step([0, 1, 2, 3], [0.5, 0.5, 0.5, 0.5])
    telemetry.update(out, idx)
    telemetry.end_epoch(0)
    assert len(telemetry.warnings()) == 1 and "budgets hardly differ" in telemetry.warnings()[0]


def test_the_fixed_sample_is_drawn_from_the_seed_without_touching_torchs_generator():
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    a, b = BudgetTelemetry(1000, "cpu", seed=7), BudgetTelemetry(1000, "cpu", seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.sample_idx, b.sample_idx) and a.sample_idx.numel() == 512
    assert not torch.equal(a.sample_idx, BudgetTelemetry(1000, "cpu", seed=8).sample_idx)


def test_a_state_taken_mid_epoch_continues_to_the_same_records():
    reference = BudgetTelemetry(6, "cpu", seed=0, bins=4)
    want = [_epoch(reference, FIRST, 0), _epoch(reference, SECOND, 1)]

    telemetry = BudgetTelemetry(6, "cpu", seed=0, bins=4)
    got = [_epoch(telemetry, FIRST, 0)]
    out, idx = _step(*SECOND[0][:2], SECOND[0][2])
    telemetry.update(out, idx)
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in telemetry.state_dict().items()}
    resumed = BudgetTelemetry(6, "cpu", seed=0, bins=4)
    resumed.load_state_dict(state)
    got.append(resumed.end_epoch(1))
    assert got == want


def test_a_state_of_another_training_set_is_refused():
    state = BudgetTelemetry(6, "cpu").state_dict()
    with pytest.raises(TelemetryError, match=r"expected \(5,\): it belongs to another training set"):
        BudgetTelemetry(5, "cpu").load_state_dict(state)


# ---------------------------------------------------------------- the file


def test_keep_finished_epochs_drops_later_and_torn_lines(tmp_path):
    path = tmp_path / "telemetry.jsonl"
    path.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3)) + '{"epoch": 4, "sam')
    keep_finished_epochs(tmp_path, 2)
    assert [r["epoch"] for r in read_telemetry(tmp_path)] == [1, 2]
    keep_finished_epochs(tmp_path / "none", 2)  # no file: nothing happens
    assert not (tmp_path / "none").exists()


def test_reading_a_missing_or_empty_file_says_so(tmp_path):
    with pytest.raises(TelemetryError, match="holds no telemetry.jsonl"):
        read_telemetry(tmp_path)
    (tmp_path / "telemetry.jsonl").write_text("")
    with pytest.raises(TelemetryError, match="is empty"):
        read_telemetry(tmp_path)


# ---------------------------------------------------------------- real runs

TINY_ADES = [
    "run", "--defense", "ades", "--cue", "grad,entropy", "--backbone", "ades_cnn_small",
    "--dataset", "imagefolder", "--train-subset", "32", "--test-subset", "16", "--batch-size", "16",
    "--epochs", "2", "--steps", "1", "--eval-steps", "1", "--device", "cpu", "--quiet",
]  # fmt: skip


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_collapsing_scheduler_warns_and_telemetry_has_one_line_per_epoch(cifar10_dir, tmp_path):
    out = tmp_path / "collapse"
    args = [*TINY_ADES, "--data-dir", str(cifar10_dir), "--out", str(out),
            "--scheduler-objective", "paper", "--scheduler-lr", "1.0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output

    metrics, telemetry = _lines(out / "metrics.jsonl"), _lines(out / "telemetry.jsonl")
    assert [r["epoch"] for r in telemetry] == [r["epoch"] for r in metrics] == [1, 2]
    assert all(r["samples"] == 32 and sum(r["histogram"]["counts"]) == 32 for r in telemetry)
    assert telemetry[0]["change"] is None
    change = telemetry[1]["change"]
    assert change["compared"] == 32 and change["rose"] + change["fell"] + change["stayed"] == pytest.approx(1)
    assert set(telemetry[0]["cues"]) == {"grad", "entropy"} and telemetry[0]["scheduler_param_norm"] > 0
    # the paper's objective with a large scheduler LR drives every budget to eps_min
    assert metrics[1]["sigma_mean"] < 0.05
    assert telemetry[1]["eps"]["max"] == pytest.approx(4 / 255, abs=1e-6)
    assert any(w.startswith("scheduler saturated: mean sigma") for w in metrics[1]["warnings"])
    assert any(w.startswith("budgets hardly differ between samples") for w in metrics[1]["warnings"])


def _tiny_config(cifar10_dir) -> RunConfig:
    return RunConfig.from_dict({
        "defense": "ades", "cues": {"names": "grad,entropy"}, "device": "cpu", "seed": 2,
        "scheduler": {"objective": "allocate-min"},  # learns no spread in 2 epochs: the warning to resume
        "model": {"backbone": "ades_cnn_small"},
        "data": {"dataset": "imagefolder", "data_dir": str(cifar10_dir), "train_subset": 32,
                 "test_subset": 16, "batch_size": 16},
        "attack": {"steps": 1}, "optim": {"epochs": 2}, "eval": {"steps": 1}, "checkpoint_every": 1,
    })


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_writes_the_same_telemetry(cifar10_dir, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    Trainer(build(_tiny_config(cifar10_dir)), progress=False).fit(reference)
    want = _lines(reference / "telemetry.jsonl")
    # the MLP starts with sigma near 0.5 for every sample: no spread yet
    assert any(w.startswith("budgets hardly differ") for w in _lines(reference / "metrics.jsonl")[0]["warnings"])

    out = tmp_path / "crashed"
    saves = []
    original = Trainer._save_files

    def crash_at_the_second_epoch_end(self, folder):
        saves.append(folder)
        if len(saves) == 2:  # epoch 2's lines are written, its state is not: as if killed here
            raise _Crash
        original(self, folder)

    monkeypatch.setattr(Trainer, "_save_files", crash_at_the_second_epoch_end)
    with pytest.raises(_Crash):
        Trainer(build(_tiny_config(cifar10_dir)), progress=False).fit(out)
    monkeypatch.setattr(Trainer, "_save_files", original)
    assert len(_lines(out / "telemetry.jsonl")) == 2  # the line past the state, dropped on resume

    Trainer(build(_tiny_config(cifar10_dir)), progress=False, resume=True).fit(out)
    assert _lines(out / "telemetry.jsonl") == want  # the restored buffers of epoch 2's first step count

    finished = tmp_path / "finished"
    shutil.copytree(reference, finished)
    (finished / "telemetry.jsonl").write_text((reference / "telemetry.jsonl").read_text() + '{"epoch": 3}\n')
    Trainer(build(_tiny_config(cifar10_dir)), progress=False, resume=True).fit(finished)
    assert _lines(finished / "telemetry.jsonl") == want
