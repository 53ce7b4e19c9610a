"""Regression: ``ades bench`` reports each training-step row's own memory, never one figure for all.

Every row used to get the same number, read once after all rows had run: the
CUDA peak over every defense, or on the CPU the process's peak RSS so far.
Now on CUDA the peak statistics are reset before each row's own call; on the
CPU, where the peak RSS cannot be reset, the row's peak is ``null`` and the
row reports how much its own first call raised the process's peak RSS, with a
note in the report saying so.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import ades_core.benchmark as benchmark
from ades_cli.main import cli
from ades_core.benchmark import MEMORY_NOTES, BenchSettings, bench_training_steps, measure_row_memory

TINY = {"batch_size": 4, "steps": 1, "warmup": 0, "repeats": 1, "device": "cpu", "amp": "off"}


class FakeMemory:
    """A memory counter: ``use(mib)`` is a call that needs ``mib``; ``peak`` the high-water mark."""

    def __init__(self, baseline: float) -> None:
        self.baseline = self.peak = baseline

    def use(self, mib: float):
        def call() -> None:
            self.peak = max(self.peak, mib)

        return call

    def reset(self, device=None) -> None:
        self.peak = self.baseline


def test_cpu_rows_report_the_growth_of_the_peak_rss_their_own_call_caused(monkeypatch):
    memory = FakeMemory(baseline=10.0)
    monkeypatch.setattr(benchmark, "peak_memory_mb", lambda device: memory.peak)
    calls = {"a": memory.use(100.0), "b": memory.use(150.0), "c": memory.use(120.0)}
    rows = measure_row_memory(calls, torch.device("cpu"))
    assert rows == {
        "a": {"peak_memory_mb": None, "peak_rss_growth_mb": 90.0},
        "b": {"peak_memory_mb": None, "peak_rss_growth_mb": 50.0},
        "c": {"peak_memory_mb": None, "peak_rss_growth_mb": 0.0},  # needed less than the peak before it
    }


def test_cuda_rows_report_the_peak_of_their_own_call_reset_before_it(monkeypatch):
    memory = FakeMemory(baseline=10.0)
    monkeypatch.setattr(benchmark, "synchronize", lambda device: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", memory.reset)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: memory.peak * 2**20)
    calls = {"a": memory.use(100.0), "b": memory.use(150.0), "c": memory.use(120.0)}
    rows = measure_row_memory(calls, torch.device("cuda"))
    assert rows == {"a": {"peak_memory_mb": 100.0}, "b": {"peak_memory_mb": 150.0}, "c": {"peak_memory_mb": 120.0}}


def test_training_step_rows_on_the_cpu_carry_their_own_rss_growth_and_no_shared_peak():
    rows = bench_training_steps(BenchSettings(defenses=("pgd-at", "ades"), cues=("grad",), **TINY))
    for row in rows.values():
        assert row["peak_memory_mb"] is None
        assert isinstance(row["peak_rss_growth_mb"], float) and row["peak_rss_growth_mb"] >= 0
        assert row["median"] > 0


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_cli_report_says_what_the_memory_figures_are(tmp_path, restore_threads):
    out = tmp_path / "bench.json"
    args = ["bench", "--batch-size", "4", "--steps", "1", "--eval-steps", "1", "--warmup", "0", "--repeats", "1",
            "--device", "cpu", "--amp", "off", "--defenses", "pgd-at", "--cue", "grad", "--threads", "1",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "peak RSS +MiB" in result.output and "memory: peak_memory_mb is null" in result.output
    report = json.loads(out.read_text(), parse_constant=lambda token: pytest.fail(f"not strict JSON: {token}"))
    assert report["memory_note"] == MEMORY_NOTES["cpu"]
    assert report["training_step"]["pgd-at"]["peak_memory_mb"] is None
    assert report["training_step"]["pgd-at"]["peak_rss_growth_mb"] >= 0
