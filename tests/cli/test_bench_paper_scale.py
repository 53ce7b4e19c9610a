"""``ades bench --paper-scale``: the paper's setting timed on one device, in one JSON.

The figures are checked for what they mean (images/s is batch / median,
seconds per epoch is epoch images / images/s, the fraction of the peak is
achieved / peak FLOP/s), on the CPU with a small CNN; on a GPU the same code
runs WRN-34-10 at batch 128 (tests/cuda, scripts/gpu_check.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import ades_core.paper_scale as paper_scale
from ades_cli.main import cli
from ades_core.builder import BuildError
from ades_core.device_peaks import Peak
from ades_core.paper_scale import REFERENCE_S_PER_EPOCH, PaperScaleSettings, count_flops, run_paper_scale

SMALL = {"backbone": "ades_cnn_small", "batch_size": 4, "steps": 1, "eval_steps": 1, "warmup": 0, "repeats": 1,
         "device": "cpu", "epoch_images": 1000, "autoattack_iterations": 1, "autoattack_queries": 5}  # fmt: skip


def test_the_defaults_are_the_paper_setting():
    settings = PaperScaleSettings()
    assert (settings.backbone, settings.batch_size) == ("ades_wrn34_10", 128)
    assert (settings.steps, settings.eval_steps) == (10, 20)
    assert settings.defenses == ("pgd-at", "trades", "ades") and settings.precisions == ("bf16", "fp32")
    assert settings.epoch_images == 50_000 and settings.autoattack
    assert (settings.autoattack_iterations, settings.autoattack_queries) == (None, None)  # the authors' own


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"precisions": ("fp8",)}, "unknown precision 'fp8'; choose from bf16, fp32"),
        ({"defenses": ("pgd-at", "nope")}, "unknown defense 'nope'; choose from"),
        ({"defenses": ("ades", "ades")}, "each once"),
        ({"autoattack_iterations": 0}, "autoattack_iterations must be >= 1"),
    ],
)
def test_bad_settings_are_refused_in_one_line(change, message):
    with pytest.raises(ValueError, match=message):
        PaperScaleSettings(**change)


def test_flops_are_counted_inside_an_input_gradient_too():
    layer = nn.Linear(6, 4)
    x = torch.rand(3, 6, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * 3 * 6 * 4
    # the attack's case: the gradient with respect to the input only (FlopCounterMode itself fails here)
    flops = count_flops(lambda: torch.autograd.grad(layer(x).sum(), x))
    assert flops == 2 * (2 * 3 * 6 * 4)  # forward, and the input gradient's matmul (no weight gradient)


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    return run_paper_scale(PaperScaleSettings(precisions=("fp32",), **SMALL))


@pytest.mark.slow
def test_each_training_row_says_images_per_second_seconds_per_epoch_flops_and_memory(report):
    rows = report["training_step"]["fp32"]
    assert list(rows) == ["pgd-at", "trades", "ades"]
    for row in rows.values():
        assert 0 < row["min"] <= row["median"]
        assert row["images_per_s"] == pytest.approx(4 / row["median"])
        assert row["s_per_epoch"] == pytest.approx(1000 / row["images_per_s"])
        assert row["achieved_tflops"] == pytest.approx(row["flops_per_step"] / row["median"] / 1e12)
        assert row["speedup_vs_reference"] == pytest.approx(REFERENCE_S_PER_EPOCH / row["s_per_epoch"])
        assert row["peak_memory_mb"] is None and row["peak_rss_growth_mb"] >= 0  # the CPU: no resettable peak
        assert row["peak"]["tflops"] is None and row["fraction_of_peak"] is None  # no peak table for CPUs
        assert row["peak"]["name"].startswith("unknown")
    assert rows["trades"]["flops_per_step"] > rows["pgd-at"]["flops_per_step"]  # its clean forward and KL
    assert rows["pgd-at"]["ratio_to_pgd_at"] == 1.0


@pytest.mark.slow
def test_pgd_and_autoattack_throughput_are_reported_on_the_same_model(report):
    pgd = report["pgd"]["fp32"]
    assert report["pgd"]["attack"] == "pgd1"
    assert pgd["images_per_s"] == pytest.approx(4 / pgd["median"])
    assert pgd["s_per_10k"] == pytest.approx(10_000 / pgd["images_per_s"])
    aa = report["autoattack"]
    assert aa["images_per_s"] == pytest.approx(4 / aa["seconds"])
    assert aa["settings"]["implementation"].startswith("pyautoattack==")
    assert aa["settings"]["standard"] is False and aa["settings"]["iterations"] == 1  # a quick check says so
    assert 0 <= aa["robust_fraction"] <= 1
    assert aa["projection"]["s_per_10k"] > 0 and "not a measurement" in aa["projection"]["what"]


@pytest.mark.slow
def test_the_fraction_of_the_peak_and_the_floor_follow_the_peak_used(monkeypatch):
    monkeypatch.setattr(paper_scale, "_peak", lambda device, precision, tf32: Peak("a test peak", "fp32", 1e-3))
    settings = PaperScaleSettings(defenses=("pgd-at",), precisions=("fp32",), autoattack=False, **SMALL)
    row = run_paper_scale(settings)["training_step"]["fp32"]["pgd-at"]
    assert row["peak"] == {"name": "a test peak", "unit": "fp32", "tflops": 1e-3}
    assert row["fraction_of_peak"] == pytest.approx(row["achieved_tflops"] / 1e-3)
    assert row["floor_s_per_epoch"] == pytest.approx(row["flops_per_step"] / 4 * 1000 / 1e9)


@pytest.mark.slow
def test_the_report_is_handed_out_after_each_section_so_a_time_limit_keeps_what_was_measured():
    seen = []
    settings = PaperScaleSettings(defenses=("pgd-at",), precisions=("fp32",), **SMALL)
    final = run_paper_scale(settings, on_section=lambda report: seen.append((set(report), report["complete"])))
    base = {"settings", "machine", "reference", "complete"}
    assert seen == [
        (base | {"training_step", "memory_note"}, False),
        (base | {"training_step", "memory_note", "pgd"}, False),
        (base | {"training_step", "memory_note", "pgd", "autoattack"}, True),
    ]
    assert final["complete"] is True


@pytest.mark.slow
def test_a_failing_row_is_reported_in_one_line_and_the_others_are_measured(monkeypatch):
    real = paper_scale.resolve_autocast

    def no_bf16(amp, device):
        if amp == "bf16":
            raise BuildError("--amp bf16 asked for, but Tesla V100 has no native bf16\\nmore text")
        return real(amp, device)

    monkeypatch.setattr(paper_scale, "resolve_autocast", no_bf16)
    settings = PaperScaleSettings(defenses=("pgd-at",), autoattack=False, **SMALL)
    report = run_paper_scale(settings)
    assert report["training_step"]["bf16"]["pgd-at"] == {
        "failed": "BuildError: --amp bf16 asked for, but Tesla V100 has no native bf16\\nmore text"
    }
    assert report["training_step"]["fp32"]["pgd-at"]["median"] > 0
    assert "failed" in report["pgd"]["bf16"] and report["pgd"]["fp32"]["median"] > 0
    assert "autoattack" not in report


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_the_cli_writes_one_strict_json_report(tmp_path, restore_threads):
    out = tmp_path / "paper.json"
    args = ["bench", "--paper-scale", "--backbone", "ades_cnn_small", "--batch-size", "4", "--steps", "1",
            "--eval-steps", "1", "--warmup", "0", "--repeats", "1", "--device", "cpu", "--precisions", "fp32",
            "--defenses", "pgd-at,ades", "--autoattack-iterations", "1", "--autoattack-queries", "5",
            "--threads", "1", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "training step" in result.output and "fp32 peak: unknown" in result.output
    report = json.loads(out.read_text(), parse_constant=lambda token: pytest.fail(f"not strict JSON: {token}"))
    assert set(report) == {"settings", "machine", "reference", "complete", "training_step", "memory_note", "pgd",
                           "autoattack"}  # fmt: skip
    assert report["complete"] is True
    assert list(report["training_step"]["fp32"]) == ["pgd-at", "ades"]
    assert report["settings"]["backbone"] == "ades_cnn_small"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--paper-scale", "--amp", "bf16"], "--amp applies only without --paper-scale"),
        (["--paper-scale", "--formats", "eager"], "--formats applies only without --paper-scale"),
        (["--precisions", "bf16"], "--precisions applies only with --paper-scale"),
        (["--no-autoattack"], "--autoattack applies only with --paper-scale"),
        (["--paper-scale", "--precisions", "fp8"], "unknown precision 'fp8'"),
    ],
)
def test_options_of_the_other_report_are_refused_in_one_line(args, message):
    result = CliRunner().invoke(cli, ["bench", *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_help_describes_the_paper_scale_report():
    text = " ".join(CliRunner().invoke(cli, ["bench", "--help"]).output.split())
    assert "--paper-scale" in text and "WRN-34-10" in text and "--precisions" in text
