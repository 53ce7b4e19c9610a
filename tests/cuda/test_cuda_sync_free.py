"""No host-device synchronisation inside the attack and training loops, under the real debug mode.

``torch.cuda.set_sync_debug_mode("error")`` raises on any operation that makes
the host wait for the GPU (``.item()``, ``nonzero``, a blocking copy, ...).
Inside it run: the steps of an epoch as the trainer makes them (next batch
from the device loader, defense step, backward, finite check, optimiser
steps, statistics, telemetry), for every defense in fp32 and bf16; and PGD,
training and evaluation, fp32 and bf16. Each loop makes one warm-up step
first, outside the mode: lazy initialisation (optimiser state, cuDNN
handles, the loader's per-epoch order) happens once, not per step.

Known and documented syncs, outside these loops: the log-interval,
checkpoint and end-of-epoch reads of the statistics; fp16 loss scaling
(``GradScaler.step`` reads its inf flag), which is why only fp32 and bf16 are
covered; the official AutoAttack and Square (the library reads values on the
host).
"""

from __future__ import annotations

import pytest
import torch

from ades_core import RunConfig, build
from ades_core.attacks import PGD
from ades_core.backbones import create_classifier
from ades_core.builder import native_bf16
from ades_core.registries import DEFENSES
from tests.training_loop import train_steps
from tests.cuda.gpu import CUDA_TESTS, image_folder, sync_is_an_error, tiny_run_config

pytestmark = CUDA_TESTS

PRECISIONS = {"fp32": ("off", None), "bf16": ("bf16", torch.bfloat16)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images"), train_per_class=8)


def _needs(dtype) -> None:
    if dtype == torch.bfloat16 and not native_bf16(torch.device("cuda")):
        pytest.skip(f"{torch.cuda.get_device_name()} has no native bf16 (compute capability < 8.0)")


@pytest.mark.parametrize("on_nonfinite", ["stop", "skip"])
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("defense", DEFENSES.names())
def test_training_steps_make_no_host_device_sync(defense, precision, on_nonfinite, data_dir):
    if on_nonfinite == "skip" and defense not in ("ades", "pgd-at"):
        pytest.skip("the skip-mode undo is the same for every defense: checked on pgd-at and ades")
    amp, dtype = PRECISIONS[precision]
    _needs(dtype)
    setup = build(RunConfig.from_dict(tiny_run_config(data_dir, defense=defense, amp=amp, on_nonfinite=on_nonfinite)))
    stats = train_steps(setup, sync_is_an_error())
    assert stats.read()["samples"] == len(setup.train_loader.labels) - 8  # read after the mode is off


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("keep_broken", [False, True], ids=["training", "evaluation"])
@pytest.mark.parametrize("eps", ["8/255", "per-sample"])
def test_pgd_makes_no_host_device_sync(precision, keep_broken, eps):
    _, dtype = PRECISIONS[precision]
    _needs(dtype)
    torch.manual_seed(0)
    model = create_classifier("ades_cnn_small", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3).cuda()
    model = model.to(memory_format=torch.channels_last).eval()
    x = torch.rand(16, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    budget = torch.linspace(0, 8 / 255, 16, device="cuda") if eps == "per-sample" else 8 / 255
    attack = PGD(steps=5, alpha=2 / 255, keep_broken=keep_broken, autocast_dtype=dtype)
    attack(model, x, y, budget)  # warm-up
    with sync_is_an_error():
        x_adv = attack(model, x, y, budget)
    assert ((x_adv - x).abs().amax() <= 8 / 255 + 1e-6).item()
