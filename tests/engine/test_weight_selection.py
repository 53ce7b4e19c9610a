"""The validation split, the best checkpoint, the weight average and the early stop (issue 16, items 1-2)."""

from __future__ import annotations

import attrs
import pytest
import torch
from torch import nn

from ades_core.config import ConfigError, RunConfig
from ades_core.data import ImageTensors
from ades_core.data.validation_split import hold_out, validation_indices
from ades_core.engine.ema import WeightAverage, warmup_decay
from ades_core.engine.validation import RunSelection
from tests.tiny_models import DropoutBNNet


def _split(n: int) -> ImageTensors:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return ImageTensors(images, torch.arange(n) % 2, ("a", "b"))


# ---------------------------------------------------------------- validation split


def test_the_validation_split_is_disjoint_from_the_training_indices_and_covers_the_rest():
    held = hold_out(_split(100), 20, seed=3)
    train, val = set(held.train_index.tolist()), set(held.val_index.tolist())
    assert len(val) == 20 and len(train) == 80
    assert not train & val
    assert train | val == set(range(100))
    # the images follow the indices (image value == its position)
    assert held.val.images[:, 0, 0, 0].tolist() == held.val_index.tolist()
    assert held.train.images[:, 0, 0, 0].tolist() == held.train_index.tolist()


def test_the_validation_split_is_fixed_by_the_seed():
    assert torch.equal(validation_indices(1000, 50, 7), validation_indices(1000, 50, 7))
    assert not torch.equal(validation_indices(1000, 50, 7), validation_indices(1000, 50, 8))


def test_a_validation_split_that_leaves_nothing_to_train_on_is_one_clear_line():
    with pytest.raises(ValueError, match=r"--val-split 10 must leave training images: the loaded training split holds 10"):
        validation_indices(10, 10, 0)


def test_the_builder_holds_the_validation_images_out_of_training(cifar10_dir):
    from ades_core import build

    config = RunConfig.from_dict({
        "defense": "pgd-at", "device": "cpu", "model": {"backbone": "ades_cnn_small"},
        "data": {"dataset": "imagefolder", "data_dir": str(cifar10_dir), "train_subset": 80, "test_subset": 8},
        "val": {"split": 16},
    })
    first, again = build(config), build(config)
    assert len(first.train_loader.labels) == 64 and len(first.val_data) == 16
    assert first.resolved["val_size"] == 16 and first.resolved["train_size"] == 64
    assert torch.equal(first.val_data.images, again.val_data.images)  # the same images for the same seed
    trained = {bytes(img.numpy()) for img in first.train_loader.images.cpu()}
    assert not any(bytes(img.numpy()) in trained for img in first.val_data.images)


def test_an_early_stop_without_a_validation_split_is_refused_when_the_config_is_built():
    with pytest.raises(ConfigError, match=r"val.early_stop_drop: .*--val-split N"):
        RunConfig.from_dict({"val": {"early_stop_drop": 0.2}})
    with pytest.raises(ConfigError, match=r"--eval-every 1"):
        RunConfig.from_dict({"val": {"split": 10, "early_stop_drop": 0.2}, "eval": {"every": 2}})


# ---------------------------------------------------------------- best checkpoint and early stop


class _Setup:
    """The parts of a TrainingSetup that RunSelection reads, without data or a model to train."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.model = DropoutBNNet()
        self.val_data = object()


def _selection(accuracies: list[float], **val) -> tuple[RunSelection, list[dict]]:
    config = RunConfig.from_dict({"val": {"split": 10, **val}})
    selection = RunSelection(_Setup(config))  # type: ignore[arg-type]
    reports = iter(accuracies)
    selection._check = lambda model: attrs.make_class("R", ["clean_acc", "robust_acc", "n"])(0.5, next(reports), 10)
    records = [selection.end_epoch(epoch, due=True) for epoch in range(len(accuracies))]
    return selection, records


def test_the_best_checkpoint_is_the_epoch_with_the_highest_robust_validation_accuracy():
    selection, records = _selection([0.20, 0.35, 0.31, 0.35, 0.28])
    assert selection.best_epoch == 2 and selection.best_acc == 0.35  # the first of a tie
    assert [r["best_epoch"] for r in records] == [1, 2, 2, 2, 2]
    assert records[-1]["val_pgd_acc"] == 0.28 and not any(r["early_stop"] for r in records)


def test_the_early_stop_fires_on_a_catastrophic_drop_below_the_best():
    selection, records = _selection([0.30, 0.40, 0.25, 0.10], early_stop_drop=0.2)
    assert [r["early_stop"] for r in records[:3]] == [False, False, False]  # 15 points: no stop
    assert records[3]["early_stop"] and selection.stopped_epoch == 4 and selection.best_epoch == 2


def test_epochs_without_the_check_record_no_validation_figures():
    config = RunConfig.from_dict({"val": {"split": 10}})
    record = RunSelection(_Setup(config)).end_epoch(0, due=False)  # type: ignore[arg-type]
    assert record["val_pgd_acc"] is None and record["best_epoch"] is None


# ---------------------------------------------------------------- EMA


def test_ema_matches_a_hand_computed_average_on_a_tiny_model():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = WeightAverage(model, 0.5, warmup=False)
    expected = torch.ones(1, 2)
    for value in (3.0, -1.0, 5.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update()
        expected = 0.5 * expected + 0.5 * value
    assert torch.allclose(ema.average["weight"], expected)  # ((1*.5+3*.5)*.5-.5)*.5+2.5 = 2.75
    assert torch.allclose(expected, torch.full((1, 2), 2.75))


def test_ema_warmup_lets_the_first_updates_forget_the_initial_weights():
    assert warmup_decay(0.999, 1) == pytest.approx(2 / 11)
    assert warmup_decay(0.999, 10_000) == 0.999
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightAverage(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()
    assert ema.average["weight"].item() == pytest.approx(1 - 2 / 11)


@pytest.mark.parametrize("mode", ["average", "copy"])
def test_ema_handles_batchnorm_statistics_as_documented(mode):
    model = DropoutBNNet()
    ema = WeightAverage(model, 0.5, warmup=False, buffers=mode)
    start = ema.average["bn.running_mean"].clone()
    model.train()
    model(torch.rand(4, 3, 8, 8) + 1.0)  # moves the running statistics
    ema.update()
    live = model.bn.running_mean
    want = start.lerp(live, 0.5) if mode == "average" else live
    assert torch.allclose(ema.average["bn.running_mean"], want)
    assert torch.equal(ema.average["bn.num_batches_tracked"], model.bn.num_batches_tracked)  # always copied


def test_the_ema_state_round_trips():
    model = DropoutBNNet()
    ema = WeightAverage(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    other = WeightAverage(DropoutBNNet(), 0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    assert all(torch.equal(other.average[k], ema.average[k]) for k in ema.names)
