"""The TensorBoard writer: scalars and the eps histogram, read back with tensorboard's own reader."""

from __future__ import annotations

import pytest

from ades_core.engine.tensorboard import NullBoard, open_board


def test_without_tensorboard_the_writer_does_nothing(tmp_path):
    board = open_board(False, tmp_path / "tb")
    assert type(board) is NullBoard
    board.step(1, 0.5, 0.1)
    assert not (tmp_path / "tb").exists()


def test_the_event_file_holds_the_scalars_and_the_histogram(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'ades[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = open_board(True, tmp_path / "tb")
    board.step(10, 2.5, 0.1)
    board.step(20, 2.0, 0.05)
    telemetry = {
        "histogram": {"low": 0.0, "high": 1.0, "counts": [1, 3]},
        "eps": {"min": 0.1, "max": 0.9, "mean": 0.6, "std": 0.2},
        "cues": {"grad": {"pearson": 0.5, "spearman": 0.4}},
    }
    board.epoch({"epoch": 1, "train_loss": 2.2, "test_pgd_acc": None, "early_stop": False}, telemetry)
    board.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("step/loss")] == [(10, 2.5), (20, 2.0)]
    assert [e.value for e in events.Scalars("step/lr")] == pytest.approx([0.1, 0.05])
    assert events.Scalars("epoch/train_loss")[0].value == pytest.approx(2.2)
    assert events.Scalars("cues/grad/pearson")[0].value == pytest.approx(0.5)
    assert "epoch/test_pgd_acc" not in events.Tags()["scalars"]  # not measured: not written
    assert events.Histograms("eps/histogram")[0].histogram_value.num == 4
