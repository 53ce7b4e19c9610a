"""The ``ades`` command: help everywhere, one-line errors, and a real run on CIFAR-10 images."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core import load_model
from ades_core.data import DataRequest, load_datasets


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("command", [[], ["run"], ["list"]])
def test_every_command_has_help(runner, command):
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_run_help_names_the_documented_options(runner):
    text = runner.invoke(cli, ["run", "--help"]).output
    for option in (
        "--defense", "--cue", "--backbone", "--dataset", "--data-dir", "--epochs", "--batch-size",
        "--lr", "--eps", "--eps-min", "--lam", "--steps", "--alpha", "--train-subset",
        "--test-subset", "--seed", "--device", "--out", "--preset",
    ):
        assert option in text


def test_list_shows_every_registered_component(runner):
    result = runner.invoke(cli, ["list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in (
        "ades", "pgd-at", "static-des", "grad", "entropy", "mcdropout", "mlp", "static", "fixed",
        "pgd", "paper", "allocate-max", "cifar10", "imagefolder", "ades_wrn34_10", "ades_cnn_small",
        "ades_preact_resnet18", "ades_wrn28_10",
    ):
        assert name in result.output, name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--defense", "madry"], "unknown defense 'madry'; registered: ades, "),
        (["--cue", "grad,margin"], "unknown cue 'margin'"),
        (["--eps", "abc"], "not a number or a fraction like 8/255"),
        (["--eps", "300/255"], "outside [0, 1]"),
        (["--eps-min", "8/255", "--lam", "250/255"], "exceeds 1"),
        (["--steps", "0"], "steps"),
        (["--backbone", "nonexistent_net", "--dataset", "imagefolder"], "unknown backbone"),
        (["--dataset", "imagefolder", "--data-dir", "/nonexistent/ades"], "/nonexistent/ades"),
        (["--device", "tpu"], "--device: 'tpu' is not one of"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(runner, tmp_path, args, message):
    result = runner.invoke(cli, ["run", "--out", str(tmp_path / "run"), "--quiet", *args])
    assert result.exit_code != 0
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1, result.output
    assert message in result.output
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.slow
def test_a_real_run_on_cifar10_writes_its_folder_and_reloads_identically(runner, tmp_path, cifar10_dir):
    out = tmp_path / "ades-run"
    args = [
        "run", "--defense", "ades", "--cue", "grad,entropy,mcdropout", "--backbone", "ades_cnn_small",
        "--dataset", "imagefolder", "--data-dir", str(cifar10_dir), "--train-subset", "256",
        "--test-subset", "128", "--epochs", "1", "--batch-size", "64", "--steps", "2",
        "--eps-min", "4/255", "--lam", "8/255", "--eval-steps", "3", "--seed", "3", "--out", str(out),
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "done:" in result.output

    config = json.loads((out / "config.json").read_text())
    assert config["defense"] == "ades" and config["cues"]["names"] == ["grad", "entropy", "mcdropout"]
    assert config["resolved"]["scheduler"] == "mlp" and config["resolved"]["train_size"] == 256
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    for key in (
        "epoch", "train_loss", "train_clean_acc", "train_adv_acc", "eps_mean", "eps_std", "eps_min",
        "eps_max", "train_seconds", "test_clean_acc", "test_pgd_acc",
    ):
        assert record[key] is not None, key
    assert 4 / 255 - 1e-6 <= record["eps_min"] <= record["eps_max"] <= 12 / 255 + 1e-6
    assert 0.0 <= record["test_pgd_acc"] <= record["test_clean_acc"] <= 1.0
    assert record["test_n"] == 128

    model = load_model(out / "model.safetensors")
    assert not model.training
    data = load_datasets("imagefolder", DataRequest(root=cifar10_dir, test_subset=32, train_subset=1))
    x = data.test.images.float() / 255
    first = model(x)
    again = load_model(out)(x)
    torch.testing.assert_close(first, again, rtol=0, atol=0)

    # a second start into the same folder is refused and changes nothing
    before = (out / "metrics.jsonl").read_bytes()
    refused = runner.invoke(cli, args)
    assert refused.exit_code != 0 and "already holds this run" in refused.output
    assert (out / "metrics.jsonl").read_bytes() == before
