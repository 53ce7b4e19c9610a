"""Evaluating a model ades did not train: timm name or module:factory, weights file, normalisation."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections import OrderedDict

import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from torch import nn

from ades_cli.main import cli
from ades_core.data import DataRequest, load_test_split
from ades_core.evaluation.external import ExternalModelError, load_external_model
from tests.cli.tiny_runs import write_images

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TIMM_ARCH = "test_resnet"  # a timm model of 0.4M parameters


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """A timm model with 10 classes and its state_dict saved as .pt and .safetensors."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = timm.create_model(TIMM_ARCH, num_classes=10).eval()
    torch.save(model.state_dict(), folder / "net.pt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "net.safetensors"))
    return model, folder


def x01(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def normalised(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_timm_model_takes_pixels_in_0_1_with_its_normalisation_inside(timm_weights, suffix):
    reference, folder = timm_weights
    model, info = load_external_model(TIMM_ARCH, folder / f"net{suffix}", num_classes=10, mean=MEAN, std=STD)
    x = x01()
    with torch.no_grad():
        assert torch.allclose(model(x), reference(normalised(x)), atol=1e-5)
    assert not model.training
    assert (info.backbone, info.defense, info.num_classes, info.run_dir) == (TIMM_ARCH, "external", 10, None)
    assert info.default_eval_file == folder / "net.eval.json"
    assert info.external == {
        "arch": TIMM_ARCH, "weights": str(folder / f"net{suffix}"), "num_classes": 10, "mean": list(MEAN),
        "std": list(STD),
    }  # fmt: skip


def test_without_mean_and_std_the_pixels_go_in_as_they_are(timm_weights):
    reference, folder = timm_weights
    model, info = load_external_model(TIMM_ARCH, folder / "net.pt", num_classes=10)
    x = x01()
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert info.external["mean"] is None


def test_a_training_checkpoint_from_ddp_is_unwrapped(timm_weights, tmp_path):
    reference, folder = timm_weights
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"epoch": 7, "optimizer": {"lr": 0.1}, "state_dict": state}, tmp_path / "ckpt.pth")
    model, _ = load_external_model(TIMM_ARCH, tmp_path / "ckpt.pth", num_classes=10)
    with torch.no_grad():
        assert torch.allclose(model(x01()), reference(x01()), atol=1e-5)


def test_an_exported_state_dict_brings_its_own_normalisation(timm_weights, tmp_path):
    reference, _ = timm_weights
    state = OrderedDict(
        [("normalize.mean", torch.tensor(MEAN).view(1, 3, 1, 1)), ("normalize.std", torch.tensor(STD).view(1, 3, 1, 1))]
        + [(f"model.{k}", v) for k, v in reference.state_dict().items()]
    )
    torch.save(state, tmp_path / "exported.pt")
    model, info = load_external_model(TIMM_ARCH, tmp_path / "exported.pt", num_classes=10)
    with torch.no_grad():
        assert torch.allclose(model(x01()), reference(normalised(x01())), atol=1e-5)
    assert info.external["std"] == pytest.approx(list(STD))
    with pytest.raises(ExternalModelError, match="holds its own normalisation"):
        load_external_model(TIMM_ARCH, tmp_path / "exported.pt", num_classes=10, mean=MEAN, std=STD)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """An importable module in the working directory whose make_model(num_classes) builds a tiny net."""
    name = f"tiny_factory_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def make_model(num_classes):
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))

        def not_a_model(num_classes):
            return "a string"
    """))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_a_module_factory_is_called_with_num_classes(factory_module, tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    model, info = load_external_model(f"{factory_module}:make_model", tmp_path / "tiny.pt", num_classes=2,
                                      mean=MEAN, std=STD)
    x = x01(size=8)
    with torch.no_grad():
        assert torch.allclose(model(x), net(normalised(x)), atol=1e-6)
    assert info.backbone == f"{factory_module}:make_model"


def _pickled_module(path):
    torch.save(nn.Linear(2, 2), path)  # a whole module: needs code to unpickle
    return path


@pytest.mark.parametrize(
    ("arch", "weights", "kwargs", "message"),
    [
        ("test_resnt", "net.pt", {}, "unknown architecture 'test_resnt'; did you mean test_resnet"),
        (TIMM_ARCH, "missing.pt", {}, "no weights file at"),
        (TIMM_ARCH, "net.ckpt", {}, "accepted: .safetensors, .pt, .pth"),
        (TIMM_ARCH, "module.pt", {}, "not a plain state_dict (loading it would run code); save model.state_dict()"),
        (TIMM_ARCH, "net.pt", {"num_classes": 100}, "has 10 outputs but 100 classes were asked for; pass --num-classes 10"),
        ("test_efficientnet", "net.pt", {}, "do not fit test_efficientnet: keys missing"),
        (TIMM_ARCH, "narrow.pt", {}, "shapes differ for"),
        (TIMM_ARCH, "net.pt", {"mean": (0.5, 0.5), "std": (0.2, 0.2)}, "have 2 values but test_resnet takes 3 input"),
        (TIMM_ARCH, "net.pt", {"mean": MEAN, "std": (0.2, 0.0, 0.2)}, "--std must be > 0 for every channel"),
        (TIMM_ARCH, "net.pt", {"mean": MEAN}, "--mean and --std go together"),
        (TIMM_ARCH, "net.pt", {"mean": ("a", "b", "c"), "std": STD}, "--mean takes comma-separated numbers"),
        ("my models:make", "net.pt", {}, "bad architecture 'my models:make': a factory is written package.module:function"),
        ("no_such_module_xyz:make", "net.pt", {}, "cannot import 'no_such_module_xyz'"),
        ("os.path:no_such_factory", "net.pt", {}, "module 'os.path' has no attribute 'no_such_factory'"),
    ],
    ids=["unknown-arch", "missing-file", "suffix", "pickle", "classes", "keys", "shapes", "mean-length",
         "std-zero", "mean-alone", "mean-text", "bad-factory", "import", "attribute"],
)
def test_bad_input_is_one_clear_line(timm_weights, tmp_path, arch, weights, kwargs, message):
    _, folder = timm_weights
    _pickled_module(folder / "module.pt")
    (folder / "net.ckpt").write_bytes(b"")
    narrow = timm.create_model(TIMM_ARCH, num_classes=10)
    state = narrow.state_dict()
    state["conv1.0.weight"] = torch.zeros(8, 3, 3, 3)  # another width than the model's first conv
    torch.save(state, folder / "narrow.pt")
    with pytest.raises(ExternalModelError) as info:
        load_external_model(arch, folder / weights, **{"num_classes": 10, **kwargs})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_factory_that_returns_no_module_is_refused(factory_module, timm_weights):
    with pytest.raises(ExternalModelError, match=r"not_a_model\(num_classes=10\) returned str, not a torch.nn.Module"):
        load_external_model(f"{factory_module}:not_a_model", timm_weights[1] / "net.pt", num_classes=10)


def test_an_ades_model_file_is_pointed_to_plain_ades_eval(tmp_path):
    from ades_core.engine.runfolder.model_files import ModelSpec, save_model

    spec = ModelSpec(backbone="ades_cnn_small", num_classes=10, mean=MEAN, std=STD)
    save_model(tmp_path / "model.safetensors", spec.build(), spec)
    with pytest.raises(ExternalModelError, match="is an ades model file; evaluate it without --arch"):
        load_external_model("ades_cnn_small", tmp_path / "model.safetensors", num_classes=10)


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "w.pt"], "--weights needs --arch"),
        (["--arch", "resnet18"], "--arch needs --weights"),
        (["RUN", "--arch", "resnet18", "--weights", "w.pt"], "RUN_DIR_OR_MODEL and --arch, --weights exclude each other"),
        (["RUN", "--mean", "0.5,0.5,0.5"], "RUN_DIR_OR_MODEL and --mean exclude each other"),
        ([], "give RUN_DIR_OR_MODEL (an ades run folder or model file), or --arch and --weights"),
        (["--arch", "resnet18", "--weights", "w.pt", "--dataset", "cifar10"], "--arch needs --num-classes, --data-dir"),
    ],
)
def test_eval_refuses_wrong_combinations_in_one_line(tmp_path, args, message):
    args = [str(tmp_path) if a == "RUN" else a for a in args]
    result = CliRunner().invoke(cli, ["eval", *args, "--attack", "fgsm"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1


def test_eval_names_a_bad_weights_file_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--arch", TIMM_ARCH, "--weights", str(tmp_path / "none.pt"),
                                      "--num-classes", "10", "--dataset", "imagefolder", "--data-dir",
                                      str(tmp_path), "--attack", "fgsm"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"Error: no weights file at {tmp_path / 'none.pt'}"


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")
def test_eval_of_a_factory_model_writes_its_report_beside_the_weights(factory_module, tmp_path):
    data = write_images(tmp_path / "data", {"test": {"cat": 3, "dog": 3}}, size=8)  # no train/ at all
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    result = CliRunner().invoke(cli, [
        "eval", "--arch", f"{factory_module}:make_model", "--weights", str(tmp_path / "tiny.pt"),
        "--num-classes", "2", "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
        "--dataset", "imagefolder", "--data-dir", str(data), "--n", "4", "--order", "first",
        "--attack", "fgsm", "--no-checks", "--device", "cpu", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "tiny.eval.json").read_text())
    assert report["model"] == str(tmp_path / "tiny.pt") and report["run_dir"] is None
    assert (report["defense"], report["backbone"]) == ("external", f"{factory_module}:make_model")
    assert report["external_model"]["mean"] == list(MEAN) and report["external_model"]["num_classes"] == 2
    assert report["dataset"]["order"] == "first" and report["dataset"]["n"] == 4
    first = load_test_split("imagefolder", DataRequest(root=data, test_subset=4, subset_order="first"))
    with torch.no_grad():  # the clean accuracy of the weights, normalised inside, on the first four images
        predicted = net(normalised(first.images.float() / 255)).argmax(1)
    assert report["clean_acc"] == pytest.approx((predicted == first.labels).float().mean().item())
