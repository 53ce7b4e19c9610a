"""The bf16 autocast path, exercised on CPU: a defense step and a short training run."""

from __future__ import annotations

import pytest
import torch

from ades_core import RunConfig, build, build_defense
from tests.tiny_models import DropoutBNNet


def test_an_ades_step_under_bf16_autocast_keeps_budgets_and_gradients_finite():
    config = RunConfig.from_dict({"defense": "ades", "attack": {"steps": 2}})
    defense = build_defense(config, autocast_dtype=torch.bfloat16)
    model = DropoutBNNet(channels=3, num_classes=4).train()
    x = torch.rand(8, 3, 8, 8)
    y = torch.randint(0, 4, (8,))
    out = defense.step(model, x, y, torch.arange(8))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert out.logits_adv.dtype == torch.float32
    assert (out.budget.eps >= 4 / 255 - 1e-7).all() and (out.budget.eps <= 12 / 255 + 1e-7).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert all(p.grad is not None for p in defense.parameters())


@pytest.mark.slow  # a real run: data loading, one epoch, a held-out check
def test_a_short_bf16_run_trains_on_real_images(tmp_path, cifar10_dir):
    config = RunConfig.from_dict(
        {
            "defense": "ades",
            "amp": "bf16",
            "device": "cpu",
            "model": {"backbone": "ades_cnn_small"},
            "data": {"dataset": "imagefolder", "data_dir": str(cifar10_dir), "train_subset": 64,
                     "test_subset": 32, "batch_size": 32},
            "attack": {"steps": 1},
            "optim": {"epochs": 1},
            "eval": {"steps": 2},
        }
    )
    setup = build(config)
    assert setup.autocast_dtype == torch.bfloat16
    history = setup.fit(tmp_path / "run", progress=False)
    assert history[0]["train_loss"] > 0 and history[0]["test_n"] == 32
