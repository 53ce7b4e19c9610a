"""What a run expects of dtype, device and memory format, and the one-line errors when it does not hold.

The CUDA-only cases (bf16 on a GPU without native bf16, torch.compile on a
GPU older than Triton supports) are checked here with the GPU's answers
faked; tests/cuda checks the real ones on a GPU.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import ades_core.builder as builder
from ades_core import RunConfig, build
from ades_core.builder import BuildError, compile_model, resolve_autocast
from ades_core.engine.placement import PlacementError, channels_last, check_placement
from ades_core.engine.trainer import Trainer
from tests.cli.tiny_runs import write_images
from tests.tiny_models import DropoutBNNet


@pytest.fixture
def gpu(monkeypatch):
    """Fake the answers of the GPU ``cuda``: ``gpu("Tesla V100-SXM2-16GB", (7, 0))``."""

    def install(name: str, capability: tuple[int, int]) -> torch.device:
        monkeypatch.setattr(builder, "_capability", lambda device: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        return torch.device("cuda")

    return install


def test_bf16_on_a_gpu_without_native_bf16_is_refused_in_one_line(gpu):
    device = gpu("Tesla V100-SXM2-16GB", (7, 0))
    with pytest.raises(BuildError) as error:
        resolve_autocast("bf16", device)
    message = str(error.value)
    assert "\n" not in message
    assert "Tesla V100-SXM2-16GB (compute capability 7.0) has no native bf16" in message
    assert "use --amp fp16 or --amp off" in message


def test_auto_precision_is_bf16_from_ampere_on_and_fp16_before(gpu):
    assert resolve_autocast("auto", gpu("Tesla V100-SXM2-16GB", (7, 0))) == torch.float16
    assert resolve_autocast("auto", gpu("NVIDIA A100-SXM4-80GB", (8, 0))) == torch.bfloat16
    assert resolve_autocast("bf16", gpu("NVIDIA H200", (9, 0))) == torch.bfloat16
    assert resolve_autocast("fp16", gpu("Tesla V100-SXM2-16GB", (7, 0))) == torch.float16


def test_the_cpu_keeps_its_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_autocast("auto", cpu) is None
    assert resolve_autocast("bf16", cpu) == torch.bfloat16
    assert resolve_autocast("off", cpu) is None


class _OnGpu:
    """Stands for a model on a GPU: its parameters report ``cuda:0`` (no GPU needed to ask)."""

    def parameters(self):
        return iter([SimpleNamespace(device=torch.device("cuda", 0))])


def test_compile_on_a_gpu_older_than_triton_supports_is_refused_in_one_line(gpu):
    gpu("Tesla P100-PCIE-16GB", (6, 0))
    with pytest.raises(BuildError, match=r"^--compile needs compute capability 7\.0\+ .*Tesla P100-PCIE-16GB "
                                         r"\(compute capability 6\.0\) is older; run without --compile$"):
        compile_model(_OnGpu())


def test_a_model_with_a_part_on_another_device_is_refused_naming_the_part():
    model = DropoutBNNet()
    model.fc.to("meta")
    with pytest.raises(PlacementError, match=r"^model parameter 'fc.weight' is on meta, but the run uses cpu: "
                                             r"move the whole model with model.to\('cpu'\)$"):
        check_placement(model, device=torch.device("cpu"))


def test_batches_on_another_device_than_the_model_are_refused():
    with pytest.raises(PlacementError, match="the training batches are on meta, but the run trains on cpu"):
        check_placement(DropoutBNNet(), device=torch.device("cpu"), data_device=torch.device("meta"))


def test_half_precision_weights_are_refused_with_the_autocast_alternative():
    with pytest.raises(PlacementError, match=r"'conv.weight' is bfloat16, expected float32: .*--amp bf16"):
        check_placement(DropoutBNNet().bfloat16(), device=torch.device("cpu"))


def test_a_float32_model_on_its_device_passes():
    check_placement(DropoutBNNet(), device=torch.device("cpu"), data_device=torch.device("cpu"))


def test_channels_last_needs_a_four_dimensional_input():
    assert channels_last(torch.rand(2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(PlacementError, match=r"^channels_last needs a 4-D \(B, C, H, W\) input, got shape \(2, 12\)$"):
        channels_last(torch.rand(2, 12))


def test_the_trainer_checks_the_setup_before_the_first_step(tmp_path):
    root = write_images(tmp_path / "data", {"train": {"a": 4, "b": 4}, "test": {"a": 2, "b": 2}})
    config = RunConfig.from_dict({
        "defense": "pgd-at", "device": "cpu", "model": {"backbone": "ades_cnn_small"},
        "data": {"dataset": "imagefolder", "data_dir": str(root), "batch_size": 4},
        "attack": {"steps": 1}, "optim": {"epochs": 1},
    })  # fmt: skip
    setup = build(config)
    setup.model.half()
    with pytest.raises(PlacementError, match="is float16, expected float32"):
        Trainer(setup, progress=False)
