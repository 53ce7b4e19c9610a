"""``ades plot training RUN_DIR``: the training figures of a real run, and one-line errors for what is missing."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core.evaluation.training_plots import CUES_FILE, CURVES_FILE, HISTOGRAM_FILE
from tests.cli.tiny_runs import GOOD, TINY_RUN, write_images

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ades_run(tmp_path_factory):
    """A two-epoch ades run (cues grad, entropy) of the small CNN on 8 random images."""
    root = tmp_path_factory.mktemp("plot")
    data = write_images(root / "data", GOOD)
    out = root / "run"
    args = ["run", *TINY_RUN, "--defense", "ades", "--cue", "grad,entropy", "--epochs", "2",
            "--data-dir", str(data), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


def _one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    return errors[0]


def _assert_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, path


@pytest.mark.slow
def test_plot_a_training_run_writes_its_figures_beside_it(ades_run):
    result = CliRunner().invoke(cli, ["plot", "training", str(ades_run)])
    assert result.exit_code == 0, result.output
    for name in (CURVES_FILE, HISTOGRAM_FILE, CUES_FILE):
        _assert_png(ades_run / "plots" / name)
        assert f"plot: {ades_run / 'plots' / name}" in result.output


@pytest.mark.slow
def test_plot_writes_into_the_folder_given_with_out(ades_run, tmp_path):
    result = CliRunner().invoke(cli, ["plot", "training", str(ades_run), "--out", str(tmp_path / "figures"), "--title", "tiny"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted([CURVES_FILE, HISTOGRAM_FILE, CUES_FILE])


@pytest.mark.slow
def test_a_run_without_cues_gets_no_cue_figure(ades_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ades_run, run)
    records = [json.loads(line) for line in (run / "telemetry.jsonl").read_text().splitlines()]
    for record in records:  # as a fixed-budget defense writes them
        record["cues"], record["sample"]["cues"] = {}, {}
    (run / "telemetry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = CliRunner().invoke(cli, ["plot", "training", str(run), "--out", str(tmp_path / "figures")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted([CURVES_FILE, HISTOGRAM_FILE])


@pytest.mark.slow
def test_a_run_without_telemetry_says_so(ades_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ades_run, run)
    (run / "telemetry.jsonl").unlink()
    result = CliRunner().invoke(cli, ["plot", "training", str(run)])
    assert result.exit_code != 0
    assert "holds no telemetry.jsonl" in _one_error_line(result.output)


def test_a_folder_without_metrics_says_so(tmp_path):
    result = CliRunner().invoke(cli, ["plot", "training", str(tmp_path)])
    assert result.exit_code != 0
    assert f"{tmp_path} holds no metrics.jsonl: it is not a training run folder" in _one_error_line(result.output)


def test_a_missing_folder_says_so(tmp_path):
    result = CliRunner().invoke(cli, ["plot", "training", str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "is not a folder" in _one_error_line(result.output)


def test_plot_names_what_it_draws_and_each_kind_takes_its_own_arguments(tmp_path):
    bare = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert bare.exit_code != 0 and "No such command" in bare.output  # plot sweep | plot training
    two = CliRunner().invoke(cli, ["plot", "training", str(tmp_path), str(tmp_path)])
    assert two.exit_code != 0 and "unexpected extra argument" in two.output.lower()
    labelled = CliRunner().invoke(cli, ["plot", "training", str(tmp_path), "--label", "a"])
    assert labelled.exit_code != 0 and "No such option '--label'" in labelled.output
    no_png = CliRunner().invoke(cli, ["plot", "sweep", str(tmp_path), "--out", str(tmp_path / "figures")])
    assert no_png.exit_code != 0 and "is not a .png file" in no_png.output


def test_plot_sweep_needs_an_evaluation(tmp_path):
    result = CliRunner().invoke(cli, ["plot", "sweep", str(tmp_path), "--out", str(tmp_path / "sweep.png")])
    assert result.exit_code != 0 and "run `ades eval` on it first" in _one_error_line(result.output)
