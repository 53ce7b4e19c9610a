"""``ades eval``, ``ades compare`` and ``ades plot``: help, one-line errors, and a real run end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ades_cli.main import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("command", ["eval", "compare", "plot"])
def test_every_evaluation_command_has_help(runner, command):
    result = runner.invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_eval_help_names_the_documented_options(runner):
    text = runner.invoke(cli, ["eval", "--help"]).output
    for option in ("--attack", "--eps", "--eps-sweep", "--n", "--batch-size", "--device", "--seed",
                   "--dataset", "--data-dir", "--plot", "--check-n", "--no-checks", "--out"):
        assert option in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attack", "pgd20,madry"], "unknown attack 'madry'; known: autoattack, autoattack-plus"),
        (["--attack", "pgd20,pgd20"], "more than once: pgd20"),
        (["--eps", "9/0"], "not a number or a fraction like 8/255"),
        (["--eps-sweep", "4/255,2"], "outside [0, 1]"),
        (["--norm", "l2", "--attack", "pgd20,autoattack-torchattacks"], "supports norm(s) linf, not l2; "),
        (["--norm", "l2", "--eps", "-0.5"], "is outside [0, 1] (pixel scale: 8/255 = 0.0314) and not an L2 radius"),
        (["--norm", "l1"], "'l1' is not one of 'linf', 'l2'"),
        (["--plot", "x.png"], "--plot needs --eps-sweep"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(runner, tmp_path, args, message):
    result = runner.invoke(cli, ["eval", str(tmp_path), *args])
    assert result.exit_code != 0
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1, result.output
    assert message in result.output


def test_a_folder_without_a_model_says_so(runner, tmp_path):
    result = runner.invoke(cli, ["eval", str(tmp_path), "--attack", "fgsm"])
    assert result.exit_code != 0 and "no model file" in result.output


def test_compare_and_plot_need_an_evaluation(runner, tmp_path):
    for command in (["compare", str(tmp_path)], ["plot", "sweep", str(tmp_path), "--out", str(tmp_path / "p.png")]):
        result = runner.invoke(cli, command)
        assert result.exit_code != 0 and "run `ades eval` on it first" in result.output


@pytest.mark.slow
def test_eval_compare_and_plot_a_real_run(runner, tiny_run, tmp_path):
    attacks = "pgd20,cw,autoattack"
    model_bytes = (tiny_run / "model.safetensors").read_bytes()
    args = ["eval", str(tiny_run), "--attack", attacks, "--n", "24", "--eps-sweep", "4/255,8/255",
            "--check-n", "12", "--batch-size", "16", "--plot", str(tmp_path / "one.png")]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output

    report = json.loads((tiny_run / "eval.json").read_text())
    assert report["format"] == "ades-eval" and report["defense"] == "pgd-at" and report["n"] == 24
    assert report["dataset"]["name"] == "imagefolder" and report["dataset"]["subset"] == 24  # from the run
    names = [row["name"] for row in report["attacks"]]
    assert names == attacks.split(",")
    worst = report["worst_case"]
    assert worst["robust_acc"] <= min(row["robust_acc"] for row in report["attacks"]) <= report["clean_acc"]
    for row in report["attacks"]:
        assert row["eps"] == pytest.approx(8 / 255) and row["n"] == 24 and row["seconds"] >= 0
        assert row["settings"]["attack"] in ("pgd", "autoattack")
    assert [p["eps_text"] for p in report["sweep"]["points"]] == ["4/255", "8/255"]
    checks = {"zero-gradients", "eps-monotone", "more-steps", "black-box", "large-eps"}
    assert {c["name"] for c in report["checks"]} == checks
    assert report["warnings"] == [c["message"] for c in report["checks"] if c["status"] == "failed"]
    assert (tmp_path / "one.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tiny_run / "model.safetensors").read_bytes() == model_bytes  # the model file is untouched

    again = runner.invoke(cli, [*args, "--out", str(tmp_path / "again.json"), "--quiet"])
    assert again.exit_code == 0, again.output
    first, second = report, json.loads((tmp_path / "again.json").read_text())
    assert [r["robust_acc"] for r in first["attacks"]] == [r["robust_acc"] for r in second["attacks"]]

    markdown = tmp_path / "table.md"
    compared = runner.invoke(cli, ["compare", str(tiny_run), str(tiny_run / "eval.json"), "--markdown", str(markdown)],
                             terminal_width=200)
    assert compared.exit_code == 0, compared.output
    assert "pgd-at" in compared.output and "PGD-20" in compared.output
    table = markdown.read_text()
    assert "| method | run | norm, eps | weights | clean | PGD-20 | CW | AutoAttack | worst-case | n | s/epoch | checks |" in table
    assert table.count("| pgd-at |") == 2

    plotted = runner.invoke(cli, ["plot", "sweep", str(tiny_run), str(tmp_path / "again.json"), "--label", "a",
                                  "--label", "b", "--out", str(tmp_path / "two.png")])
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "two.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_overrides_the_recorded_data_folder(runner, tiny_run, tmp_path):
    result = runner.invoke(cli, ["eval", str(tiny_run), "--attack", "fgsm", "--data-dir", str(tmp_path / "nowhere"),
                                 "--out", str(tmp_path / "e.json")])
    assert result.exit_code != 0 and "nowhere" in result.output
