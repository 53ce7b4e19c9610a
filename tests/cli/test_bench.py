"""``ades bench --formats``: one pgd-at training step per execution format, side by side.

Every format is timed on its own model (the same initial weights) and batch;
a format that fails is reported with its one-line reason, never raised.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import ades_core.benchmark as benchmark
from ades_cli.main import cli
from ades_core.benchmark import FORMATS, BenchSettings, bench_formats

TINY = {"batch_size": 4, "steps": 1, "warmup": 0, "repeats": 1, "device": "cpu", "amp": "off"}
TINY_ARGS = ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--repeats", "1", "--device", "cpu",
             "--amp", "off"]


def test_formats_are_off_by_default():
    assert BenchSettings().formats == ()


@pytest.mark.parametrize("formats", [("eager", "fp8"), ("eager", "eager")])
def test_unknown_or_repeated_formats_are_refused(formats):
    with pytest.raises(ValueError, match="format"):
        BenchSettings(formats=formats)


def test_formats_only_needs_a_format():
    with pytest.raises(ValueError, match="formats_only"):
        BenchSettings(formats_only=True)


def test_each_format_reports_time_throughput_and_ratio_to_eager():
    rows = bench_formats(BenchSettings(formats=("eager", "channels_last"), **TINY))
    assert (rows["defense"], rows["steps"]) == ("pgd-at", 1)
    for name in ("eager", "channels_last"):
        row = rows[name]
        assert 0 < row["min"] <= row["median"]
        assert row["images_per_s"] == pytest.approx(4 / row["median"])
        assert row["first_call_s"] > 0
        assert "compile_s" not in row
    assert rows["eager"]["ratio_to_eager"] == 1.0
    assert rows["channels_last"]["ratio_to_eager"] == pytest.approx(
        rows["channels_last"]["median"] / rows["eager"]["median"]
    )


def test_channels_last_format_trains_a_channels_last_model(monkeypatch):
    seen = []
    real = benchmark.training_step

    def spy(defense, model, optimiser, x, y, device):
        seen.append((model.backbone.features[0].weight.is_contiguous(memory_format=torch.channels_last),
                     x.is_contiguous(memory_format=torch.channels_last), x.is_contiguous()))
        return real(defense, model, optimiser, x, y, device)

    monkeypatch.setattr(benchmark, "training_step", spy)
    bench_formats(BenchSettings(formats=("eager", "channels_last"), **TINY))
    assert seen[0][2] and not seen[0][1]  # eager: contiguous NCHW input
    assert seen[1][:2] == (True, True)


def test_a_failing_format_is_reported_with_its_reason_and_the_others_still_run(monkeypatch):
    def no_compiler(model):
        raise RuntimeError("no working C++ compiler\nlong traceback text")

    monkeypatch.setattr(benchmark, "compile_model", no_compiler)
    rows = bench_formats(BenchSettings(formats=("eager", "compile"), **TINY))
    assert rows["compile"] == {"failed": "RuntimeError: no working C++ compiler"}
    assert rows["eager"]["median"] > 0


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cli_formats_only_writes_just_the_format_section(tmp_path, restore_threads):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        cli, ["bench", *TINY_ARGS, "--formats", "eager,channels_last", "--formats-only", "--threads", "1",
              "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "by format" in result.output
    report = json.loads(out.read_text())
    assert set(report) == {"settings", "machine", "formats"}
    assert report["machine"]["threads"] == 1
    assert report["settings"]["formats"] == ["eager", "channels_last"]


def test_cli_unknown_format_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["bench", "--formats", "eager,fp8", "--formats-only"])
    assert result.exit_code != 0
    assert "unknown format 'fp8'" in result.output
    assert "Traceback" not in result.output


def test_cli_help_lists_the_formats():
    text = CliRunner().invoke(cli, ["bench", "--help"]).output
    assert "--formats" in text and "--formats-only" in text
    assert all(name in text for name in FORMATS)


@pytest.mark.slow
def test_compile_format_compiles_as_ades_run_does_and_times_the_compilation_apart():
    rows = bench_formats(BenchSettings(formats=("eager", "compile"), **TINY))
    row = rows["compile"]
    assert "failed" not in row, row.get("failed")
    assert row["first_call_s"] > row["median"]
    assert row["compile_s"] == pytest.approx(row["first_call_s"] - row["median"])
