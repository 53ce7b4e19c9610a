"""``ades export --robustbench``: the model_info JSON, a state_dict plain PyTorch reloads, and the refusals.

The evaluations here are fabricated ``eval.json`` payloads (an official
AutoAttack on the whole CIFAR-10 test split takes hours); the model is a real
ades model file with random weights and BatchNorm statistics, so the round
trip checks every tensor the export must carry.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict

import pytest
import timm
import torch
from click.testing import CliRunner

from ades_cli.main import cli
from ades_core import load_model
from ades_core.engine.runfolder.model_files import ModelSpec, save_model
from ades_core.evaluation import write_report
from ades_core.evaluation.external import load_external_model
from ades_core.evaluation.robustbench import ExportError, export_robustbench

ARCH = "ades_cnn_small"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder holding an ades model file whose every tensor (BN statistics too) is random."""
    folder = tmp_path_factory.mktemp("runs") / "pgd-at-tiny"
    folder.mkdir()
    spec = ModelSpec(backbone=ARCH, num_classes=10, mean=MEAN, std=STD)
    model = spec.build()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, value in model.backbone.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5 * key.endswith("running_var"))
    save_model(folder / "model.safetensors", model, spec, {"defense": "pgd-at", "model": {"backbone": ARCH}})
    return folder


def payload(run, **changes):
    """An ``eval.json`` of the official AutoAttack on the whole CIFAR-10 test split (as ades eval writes it)."""
    autoattack = {
        "name": "autoattack", "eps": 8 / 255, "eps_text": "8/255", "n": 10000, "clean_acc": 0.8123,
        "robust_acc": 0.5532, "robust_count": 5532, "attacked": 8123, "seconds": 1.0, "white_box": False,
        "settings": {"attack": "autoattack", "implementation": "pyautoattack==0.2.0", "version": "standard",
                     "standard": True},
    }  # fmt: skip
    pgd = autoattack | {"name": "pgd20", "robust_acc": 0.5801, "settings": {"attack": "pgd"}}
    report = {
        "format": "ades-eval", "version": 1, "model": str(run / "model.safetensors"), "run_dir": str(run),
        "defense": "pgd-at", "backbone": ARCH,
        "dataset": {"name": "cifar10", "data_dir": "/data/cifar10", "split": "test", "n": 10000, "subset": None,
                    "order": "all", "subset_seed": None},
        "n": 10000, "eps": 8 / 255, "eps_text": "8/255", "seed": 0, "clean_acc": 0.8123,
        "attacks": [pgd, autoattack],
        "worst_case": autoattack | {"name": "worst-case", "settings": {"attacks": ["pgd20", "autoattack"]}},
        "warnings": [], "versions": {"ades": "0.1.0"},
    }  # fmt: skip
    for key, value in changes.items():
        report[key] = value
    return report


def write_eval(run, report, name="eval.json"):
    return write_report(run / name, report)


class Normalize(torch.nn.Module):
    """What a user writes with plain PyTorch: the normalisation as two buffers."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.ones(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def test_the_exported_state_dict_gives_the_runs_logits_in_plain_pytorch(run, tmp_path):
    write_eval(run, payload(run))
    files = export_robustbench(run, tmp_path / "out", name="Doe2025Tiny")
    state = torch.load(files.state_dict, weights_only=True)
    plain = torch.nn.Sequential(OrderedDict(normalize=Normalize(), model=timm.create_model(ARCH, num_classes=10)))
    plain.load_state_dict(state)  # strict: every key present, none left over
    plain.eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # pixels in [0, 1]
    with torch.no_grad():
        assert torch.equal(plain(x), load_model(run)(x))
    assert state["normalize.std"].view(-1).tolist() == pytest.approx(STD)


def test_the_readme_code_rebuilds_the_model(run, tmp_path, monkeypatch):
    write_eval(run, payload(run))
    files = export_robustbench(run, tmp_path, name="Doe2025Tiny")
    code = re.search(r"```python\n(.*?)```", files.readme.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(files.readme), "exec"), namespace)  # noqa: S102 - the README's own snippet
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(namespace["model"](x), load_model(run)(x))


def test_the_export_evaluates_again_as_an_external_model(run, tmp_path):
    write_eval(run, payload(run))
    files = export_robustbench(run, tmp_path, name="Doe2025Tiny")
    model, info = load_external_model(ARCH, files.state_dict, num_classes=10)  # normalisation from the file
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), load_model(run)(x))
    assert info.external["mean"] == pytest.approx(list(MEAN))


def test_model_info_has_robustbenchs_fields_and_formats(run, tmp_path):
    write_eval(run, payload(run))
    files = export_robustbench(run, tmp_path, name="Doe2025Tiny", title="Adaptive budgets", authors="J. Doe",
                               link="https://example.org/paper", venue="arXiv, 2025")
    info = json.loads(files.model_info.read_text())
    footnote = info.pop("footnote")
    assert info == {
        "link": "https://example.org/paper", "name": "Adaptive budgets", "authors": "J. Doe",
        "additional_data": False, "number_forward_passes": 1, "dataset": "cifar10", "venue": "arXiv, 2025",
        "architecture": ARCH, "eps": "8/255", "clean_acc": "81.23", "reported": "55.32", "autoattack_acc": "55.32",
        "threat_model": "Linf",
    }  # fmt: skip
    assert "pyautoattack==0.2.0" in footnote and "n=10000" in footnote and "order all" in footnote
    assert "seed 0" in footnote
    assert files.model_info.name == "Doe2025Tiny.json" and files.state_dict.name == "Doe2025Tiny.pt"


def test_a_stronger_worst_case_is_reported_as_external(run, tmp_path):
    report = payload(run)
    report["worst_case"] = report["worst_case"] | {"robust_acc": 0.5497}
    report["warnings"] = ["large-eps: robust accuracy at eps 64/255 is 9.0% ..."]
    write_eval(run, report)
    info = json.loads(export_robustbench(run, tmp_path, name="x").model_info.read_text())
    assert info["external"] == "54.97" and info["autoattack_acc"] == "55.32"
    assert "worst case over pgd20, autoattack is 54.97%" in info["footnote"]
    assert "Gradient-masking checks warned: large-eps" in info["footnote"]


def _row(report, name):
    return next(r for r in report["attacks"] if r["name"] == name)


def torchattacks_eval(run):
    report = payload(run)
    row = _row(report, "autoattack")
    row["name"] = "autoattack-torchattacks"
    row["settings"] = {"attack": "autoattack-torchattacks", "implementation": "torchattacks==3.5.1"}
    return report


def renamed_official(run):
    report = payload(run)
    _row(report, "autoattack")["settings"]["implementation"] = "torchattacks==3.5.1"
    return report


def nonstandard(run):
    report = payload(run)
    _row(report, "autoattack")["settings"] |= {"standard": False}
    return report


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda run: payload(run, attacks=[_row(payload(run), "pgd20")]), {},
         "has no AutoAttack row (attacks: pgd20); run ades eval with --attack autoattack"),
        (torchattacks_eval, {}, "has no AutoAttack row (attacks: pgd20, autoattack-torchattacks)"),
        (renamed_official, {}, "is torchattacks==3.5.1, not the official implementation (pyautoattack)"),
        (nonstandard, {}, "ran with non-standard settings"),
        (lambda run: payload(run, dataset={"name": "cifar10", "n": 1000, "subset": 1000, "order": "first"}), {},
         "covers 1000 of the 10,000 cifar10 test images (--n 1000); RobustBench needs the whole test split"),
        (lambda run: payload(run, dataset={"name": "imagefolder", "n": 10000, "subset": None}), {},
         "not 'imagefolder'; if the image folder holds a RobustBench dataset's test split, name it with --dataset"),
        (lambda run: payload(run), {"dataset": "cifar100"}, "the evaluation ran on 'cifar10', not 'cifar100'"),
        (lambda run: payload(run, model="/elsewhere/model.safetensors") | {"model": __file__}, {},
         "export the run that was evaluated"),
        (lambda run: payload(run), {"name": "../up"}, "is not a file name"),
    ],
    ids=["no-autoattack", "torchattacks", "implementation", "nonstandard", "subset", "imagefolder",
         "dataset-mismatch", "other-model", "bad-name"],
)
def test_what_a_leaderboard_cannot_take_is_refused_in_one_line(run, tmp_path, make, kwargs, message):
    write_eval(run, make(run), "refused.json")
    with pytest.raises(ExportError) as info:
        export_robustbench(run, tmp_path, eval_file=run / "refused.json", **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_imagefolder_evaluation_exports_when_its_dataset_is_named(run, tmp_path):
    write_eval(run, payload(run, dataset={"name": "imagefolder", "n": 10000, "subset": None, "order": "all"}))
    info = json.loads(export_robustbench(run, tmp_path, name="x", dataset="cifar10").model_info.read_text())
    assert info["dataset"] == "cifar10" and "imagefolder" in info["footnote"]


def test_the_command_writes_three_files_and_refuses_to_overwrite(run, tmp_path):
    write_eval(run, payload(run))
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(run), "--robustbench", str(tmp_path / "rb"), "--name", "Doe2025Tiny"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "rb").iterdir()) == ["Doe2025Tiny.json", "Doe2025Tiny.pt", "README.md"]
    again = runner.invoke(cli, ["export", str(run), "--robustbench", str(tmp_path / "rb"), "--name", "Doe2025Tiny"])
    assert again.exit_code == 1 and "already exist; pass --overwrite" in again.output
    assert len([line for line in again.output.splitlines() if line.startswith("Error")]) == 1
    replaced = runner.invoke(cli, ["export", str(run), "--robustbench", str(tmp_path / "rb"), "--name",
                                   "Doe2025Tiny", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output


def test_the_command_refuses_a_run_without_evaluation_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(tmp_path), "--robustbench", str(tmp_path / "rb")])
    assert result.exit_code == 1 and result.output.count("Error") == 1


def test_the_entry_is_named_after_the_run_folder_by_default(run, tmp_path):
    write_eval(run, payload(run))
    files = export_robustbench(run, tmp_path)
    assert files.model_info.name == f"{run.name}.json" and files.state_dict.name == f"{run.name}.pt"
