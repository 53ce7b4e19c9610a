"""Free-AT: m optimiser updates per minibatch, one perturbation carried across replays and minibatches."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ades_core import RunConfig, build, build_defense
from ades_core.builder import training_passes
from ades_core.engine.trainer import Trainer
from ades_core.protocols import Defense
from tests.tiny_models import LinearClassifier

EPS = 8 / 255
KEPT = torch.tensor(True)  # what the trainer hands a kept step's commit hook


class InputRecorder(nn.Module):
    """A linear classifier that records every input of its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = LinearClassifier(6, 3, seed=3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


def _defense(replays: int):
    config = RunConfig.from_dict(
        {"defense": "free-at", "budget": {"eps": EPS}, "defense_options": {"replays": replays}}
    )
    return build_defense(config)


def _batches(sizes: list[int]):
    generator = torch.Generator().manual_seed(0)
    for size in sizes:
        x = 0.25 + 0.5 * torch.rand(size, 1, 2, 3, generator=generator)  # the box never clips x + delta
        yield x, torch.randint(0, 3, (size,), generator=generator), torch.arange(size)


def _expected_next_delta(model: InputRecorder, x, y, delta) -> torch.Tensor:
    """``clip(delta + eps * sign(grad_delta CE(f(x + delta))), -eps, eps)`` on a copy of the model."""
    probe = copy.deepcopy(model.inner)
    delta = delta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(probe(x + delta), y), delta)
    return (delta.detach() + EPS * grad.sign()).clamp(-EPS, EPS)


def test_each_minibatch_gets_m_updates_and_delta_carries_over_replays_and_minibatches():
    m = 3
    defense = _defense(m)
    assert defense.replays == m
    model = InputRecorder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    updates = 0
    carried = None
    for k, (x, y, idx) in enumerate(_batches([4, 4, 4])):
        for j in range(m):  # what the trainer does with defense.replays
            before = defense.delta_for(x).clone()
            if j == 0 and carried is not None:
                assert torch.equal(before, carried), "minibatch k+1 starts from minibatch k's last delta"
            expected = _expected_next_delta(model, x, y, before)
            optimizer.zero_grad()
            out = defense.step(model, x, y, idx)
            out.loss.backward()
            optimizer.step()
            updates += 1
            out.commit(KEPT)
            torch.testing.assert_close(model.seen[-1] - x, before, rtol=0, atol=1e-6)  # trained on x + delta
            torch.testing.assert_close(defense.delta_for(x), expected)  # the gradient of that same pass
            assert defense.delta_for(x).abs().max() <= EPS + 1e-7
        carried = defense.delta_for(x).clone()
        assert len(model.seen) == m * (k + 1), "one forward per replay: model and input gradients share it"
    assert updates == 3 * m
    assert carried.abs().sum() > 0


def test_a_smaller_last_batch_uses_and_updates_only_the_first_rows():
    defense = _defense(1)
    model = InputRecorder()
    (x, y, idx), (x_small, y_small, idx_small) = _batches([4, 2])
    out = defense.step(model, x, y, idx)
    out.loss.backward()
    out.commit(KEPT)
    full = defense.delta.clone()
    out = defense.step(model, x_small, y_small, idx_small)
    torch.testing.assert_close(model.seen[-1] - x_small, full[:2], rtol=0, atol=1e-6)
    out.loss.backward()
    out.commit(KEPT)
    assert defense.delta.shape == (4, 1, 2, 3)
    assert torch.equal(defense.delta[2:], full[2:])
    assert not torch.equal(defense.delta[:2], full[:2])


def test_delta_is_saved_and_restored_with_its_shape():
    defense = _defense(2)
    x, y, idx = next(_batches([4]))
    out = defense.step(InputRecorder(), x, y, idx)
    out.loss.backward()
    out.commit(KEPT)
    fresh = _defense(2)
    assert fresh.delta.numel() == 0
    fresh.load_state_dict(defense.state_dict())
    assert torch.equal(fresh.delta, defense.delta)
    assert isinstance(fresh, Defense)


def test_the_epochs_are_divided_by_the_replays():
    assert training_passes(100, 8) == 13
    assert training_passes(100, 1) == 100
    assert training_passes(3, 8) == 1


def test_the_trainer_makes_m_updates_per_minibatch_over_epochs_over_m_passes(tmp_path, cifar10_dir):
    def setup_for(epochs: int, replays: int):
        config = RunConfig.from_dict(  # 2 minibatches of 16
            {
                "defense": "free-at",
                "device": "cpu",
                "model": {"backbone": "ades_cnn_small"},
                "data": {"dataset": "imagefolder", "data_dir": str(cifar10_dir), "train_subset": 32,
                         "test_subset": 8, "batch_size": 16},
                "defense_options": {"replays": replays},
                "optim": {"epochs": epochs},
                "eval": {"steps": 1},
            }
        )
        return build(config)

    paper = setup_for(100, 8)
    assert paper.epochs == paper.resolved["epochs"] == 13
    assert sorted(paper.lr_schedule.milestones) == [10, 12]  # 75% and 90% of 13 passes

    setup = setup_for(3, 2)
    assert setup.epochs == 2
    steps = []
    setup.optimizer.register_step_post_hook(lambda *_: steps.append(1))
    trainer = Trainer(setup, progress=False)
    history = trainer.fit(tmp_path / "run")
    assert len(history) == 2
    assert trainer.global_step == 2 * 2  # two passes of two minibatches
    assert len(steps) == 2 * 2 * 2  # ... each replayed twice, an optimiser update per replay
    assert history[-1]["test_pgd_acc"] is not None
