"""The hot loops never make the host wait for the device: checked on the CPU by operation name.

A training step (next batch, defense step, backward, finite check, optimiser
steps, the epoch's statistics and telemetry) and every PGD call run no
operation that synchronises on CUDA (see tests/host_reads.py for the list).
tests/cuda/test_cuda_sync_free.py runs the same loops under
``torch.cuda.set_sync_debug_mode("error")`` on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from ades_core import RunConfig, build
from ades_core.attacks import PGD
from ades_core.registries import DEFENSES
from tests.cli.tiny_runs import write_images
from tests.host_reads import HostReadProbe, no_host_reads
from tests.tiny_models import DropoutBNNet
from tests.training_loop import train_steps

CPU_ADAM = "torch/optim/"
"""Adam on the CPU reads its step count on the host (``capturable=False``). On CUDA the
builder makes it capturable, which tests/cuda checks under the real sync-debug mode."""


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_images(
        tmp_path_factory.mktemp("images"), {"train": {c: 6 for c in "abcd"}, "test": {c: 2 for c in "abcd"}}
    )


def _setup(image_folder, defense: str, on_nonfinite: str = "stop"):
    return build(RunConfig.from_dict({
        "defense": defense, "device": "cpu", "model": {"backbone": "ades_cnn_small"},
        "data": {"dataset": "imagefolder", "data_dir": str(image_folder), "batch_size": 8},
        "attack": {"steps": 2}, "optim": {"epochs": 2}, "on_nonfinite": on_nonfinite,
    }))  # fmt: skip


@pytest.mark.slow  # 3-15 s each on 2 busy cores: the probe runs every operation through Python
@pytest.mark.parametrize("defense", DEFENSES.names())
def test_a_training_step_of_every_defense_reads_nothing_on_the_host(image_folder, defense):
    train_steps(_setup(image_folder, defense), no_host_reads(allow=(CPU_ADAM,)), steps=2)


@pytest.mark.slow
def test_a_skipping_step_undoes_itself_without_reading_on_the_host(image_folder):
    train_steps(_setup(image_folder, "ades", on_nonfinite="skip"), no_host_reads(allow=(CPU_ADAM,)), steps=2)


@pytest.mark.parametrize("keep_broken", [False, True], ids=["training", "evaluation"])
@pytest.mark.parametrize("eps", [8 / 255, "per-sample"])
def test_pgd_reads_nothing_on_the_host(keep_broken, eps):
    model = DropoutBNNet(num_classes=4)
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    budget = torch.linspace(0, 8 / 255, 6) if eps == "per-sample" else eps
    attack = PGD(steps=3, alpha=2 / 255, keep_broken=keep_broken)
    with no_host_reads():
        attack(model, x, y, budget)


def test_the_probe_sees_what_would_synchronise():
    t = torch.tensor([0.0, 1.0])
    with HostReadProbe() as probe:
        float(t.sum())
        t[t > 0]
        torch.tensor([1.0])
    assert [r.what.split(" ")[0] for r in probe.reads] == ["a", "boolean-mask", "torch.tensor(host"]
    with pytest.raises(AssertionError, match="1 host read"):
        with no_host_reads():
            t.max().item()
