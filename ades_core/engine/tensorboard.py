"""An optional TensorBoard writer beside ``metrics.jsonl`` (``--tensorboard``; the ``tensorboard`` extra).

What it writes to ``<run>/tensorboard/``:

==========================  ===================================================
tag                         value, step
==========================  ===================================================
``step/loss``               the running mean training loss, at every progress
                            refresh (every ``--log-every`` steps), global step
``step/lr``                 the model's learning rate there, global step
``epoch/<key>``             every number of the epoch's metrics record
                            (``train_loss``, ``test_pgd_acc``, ``val_pgd_acc``, ...), epoch
``eps/histogram``           the epoch's per-sample budget histogram (telemetry), epoch
``cues/<cue>/pearson``,     the correlation of eps with each cue (telemetry), epoch
``cues/<cue>/spearman``
==========================  ===================================================

The step scalars reuse the figures the trainer reads for its progress line,
so the writer adds no host-device synchronisation. :func:`open_board` returns
a writer that does nothing when TensorBoard is off (or on ranks other than 0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ades_core.errors import AdesError


class TensorBoardUnavailable(AdesError, ValueError):
    """``--tensorboard`` without the tensorboard package; one line."""


def check_available() -> None:
    """Raise :class:`TensorBoardUnavailable` unless ``torch.utils.tensorboard`` can be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise TensorBoardUnavailable(
            f"--tensorboard needs the tensorboard package ({exc}); install it with pip install 'ades[tensorboard]'"
        ) from None


class NullBoard:
    """The writer of a run without ``--tensorboard``: every call does nothing."""

    def step(self, global_step: int, loss: float | None, lr: float) -> None:
        pass

    def epoch(self, record: dict[str, Any], telemetry: dict[str, Any] | None) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardBoard(NullBoard):
    """Writes the scalars and histograms of the table above to ``folder``."""

    def __init__(self, folder: Path, *, purge_step: int | None = None) -> None:
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def step(self, global_step: int, loss: float | None, lr: float) -> None:
        if loss is not None and math.isfinite(loss):
            self.writer.add_scalar("step/loss", loss, global_step)
        self.writer.add_scalar("step/lr", lr, global_step)

    def epoch(self, record: dict[str, Any], telemetry: dict[str, Any] | None) -> None:
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        if telemetry:
            self._telemetry(telemetry, epoch)
        self.writer.flush()

    def _telemetry(self, telemetry: dict[str, Any], epoch: int) -> None:
        import numpy as np

        histogram, eps = telemetry.get("histogram"), telemetry.get("eps")
        if histogram and eps and sum(histogram["counts"]):
            counts = histogram["counts"]
            low, high = histogram["low"], histogram["high"]
            edges = np.linspace(low, high, len(counts) + 1)
            self.writer.add_histogram_raw(
                "eps/histogram", min=eps["min"], max=eps["max"], num=int(sum(counts)),
                sum=eps["mean"] * sum(counts), sum_squares=(eps["std"] ** 2 + eps["mean"] ** 2) * sum(counts),
                bucket_limits=edges[1:].tolist(), bucket_counts=counts, global_step=epoch,
            )
        for cue, values in (telemetry.get("cues") or {}).items():
            for name, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"cues/{cue}/{name}", value, epoch)

    def close(self) -> None:
        self.writer.close()


def open_board(enabled: bool, folder: Path, *, main_rank: bool = True, purge_step: int | None = None) -> NullBoard:
    """A :class:`TensorBoardBoard` on ``folder`` when ``enabled`` on the main rank, else a :class:`NullBoard`.

    ``purge_step``: on resume, the global step to continue from (later events
    an interrupted run wrote are hidden, as ``SummaryWriter`` does).
    """
    if not (enabled and main_rank):
        return NullBoard()
    return TensorBoardBoard(folder, purge_step=purge_step)


__all__ = ["NullBoard", "TensorBoardBoard", "TensorBoardUnavailable", "check_available", "open_board"]
