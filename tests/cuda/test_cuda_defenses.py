"""Every registered defense trains a few steps on CUDA, in fp32 and under bf16 autocast.

A short run through the trainer (build -> Trainer.fit): four steps of 8
images, the held-out PGD check and the run folder. The run must end with
finite, changed weights still on the GPU in float32 and channels_last, and no
skipped step.
"""

from __future__ import annotations

import math

import pytest
import torch

from ades_core import RunConfig, build
from ades_core.builder import native_bf16
from ades_core.engine.placement import check_placement
from ades_core.engine.trainer import Trainer
from ades_core.registries import DEFENSES
from tests.cuda.gpu import CUDA_TESTS, image_folder, tiny_run_config

pytestmark = CUDA_TESTS

PRECISIONS = {"fp32": ("off", None), "bf16": ("bf16", torch.bfloat16)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("defense", DEFENSES.names())
def test_every_defense_trains_a_few_steps_on_cuda(defense, precision, data_dir, tmp_path):
    amp, dtype = PRECISIONS[precision]
    if dtype == torch.bfloat16 and not native_bf16(torch.device("cuda")):
        pytest.skip(f"{torch.cuda.get_device_name()} has no native bf16 (compute capability < 8.0)")
    setup = build(RunConfig.from_dict(tiny_run_config(data_dir, defense=defense, amp=amp)))
    assert setup.device.type == "cuda" and setup.autocast_dtype == dtype
    before = [p.detach().clone() for p in setup.model.parameters()]

    (record,) = Trainer(setup, progress=False).fit(tmp_path / "run")

    assert record["nonfinite_steps"] == 0
    assert math.isfinite(record["train_loss"])
    assert record["test_n"] == 8 and record["test_pgd_acc"] is not None
    after = list(setup.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), "no weight changed"
    check_placement(setup.model, device=setup.device)  # still on the GPU, float32, channels_last
    assert (tmp_path / "run" / "model.safetensors").is_file()
