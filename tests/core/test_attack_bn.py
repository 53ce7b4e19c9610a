"""--attack-bn: the training attack's BatchNorm mode changes, its running statistics never do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ades_core.attacks.pgd import PGD
from ades_core.config import AttackOptions, ConfigError, RunConfig
from ades_core.model_mode import attack_mode
from tests.tiny_models import DropoutBNNet


class _Recorder(nn.Module):
    """Records, at each forward, whether BN normalises with the batch (training, no tracking)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[tuple[bool, bool]] = []
        model.bn.register_forward_pre_hook(lambda m, args: self.seen.append((m.training, m.track_running_stats)))

    def forward(self, x):
        return self.model(x)


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


@pytest.mark.parametrize(("mode", "expected"), [("eval", (False, True)), ("train", (True, False))])
def test_the_bn_mode_option_changes_the_attacks_bn_mode_and_never_the_running_statistics(mode, expected):
    torch.manual_seed(0)
    model = _Recorder(DropoutBNNet())
    model.train()
    before = _buffers(model)
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    attack = PGD(steps=3, alpha=2 / 255, bn_mode=mode)
    attack(model, x, y, 8 / 255)
    assert set(model.seen) == {expected}
    after = _buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before), "an attack pass moved the BN statistics"
    assert model.training and model.model.bn.track_running_stats  # every mode restored


def test_train_mode_normalises_with_the_batch_statistics():
    model = DropoutBNNet()
    model.eval()
    x = torch.rand(4, 3, 8, 8) * 5
    with torch.no_grad(), attack_mode(model, "train"):
        features = model.bn(model.conv(x))
    assert torch.allclose(features.mean(dim=(0, 2, 3)), torch.zeros(features.shape[1]), atol=1e-4)
    assert not model.training


def test_the_option_reaches_the_training_attack_of_pgd_based_defenses():
    from ades_core import build_defense

    for defense in ("pgd-at", "fast-at", "trades"):
        built = build_defense(RunConfig.from_dict({"defense": defense, "attack": {"bn": "train"}}))
        assert built.attack.bn_mode == "train", defense
    assert AttackOptions().bn == "eval"


@pytest.mark.parametrize("defense", ["free-at", "mma", "iaat"])
def test_defenses_with_their_own_attack_refuse_the_train_mode_when_the_config_is_built(defense):
    with pytest.raises(ConfigError, match=r"attack.bn: .* runs its own attack"):
        RunConfig.from_dict({"defense": defense, "attack": {"bn": "train"}})
