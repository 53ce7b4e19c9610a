"""What a run's training state holds: taken from a :class:`TrainingSetup`, and put back.

The state is everything the next step depends on:

==================  ==========================================================
key                 content
==================  ==========================================================
``position``        epoch (0-based) and steps of it done; the global step
``config``          the config fields a resumed run must keep (checked on load)
``history``         the finished epochs' metrics, as in ``metrics.jsonl`` (null for a
                    non-finite figure); ``metrics.jsonl`` is rewritten from it
``model``           the model's ``state_dict`` (weights, BN statistics)
``defense``         the defense's ``state_dict``: a learnable scheduler, per-sample state
``optimizers``      the model's SGD and the defense's Adam (momentum, moments, steps)
``lr_schedule``     the LR schedule's ``state_dict``
``grad_scaler``     the fp16 loss scaler's ``state_dict``, or None
``rng``             every random generator (:mod:`.rng_state`)
``epoch_stats``     the running sums of an unfinished epoch, or None
``epoch_seconds``   training seconds spent in the unfinished epoch
``environment``     device and torch's intra-op thread count (bitwise resumes need the same)
==================  ==========================================================

The data loader needs no state of its own: its order and augmentation are
functions of ``(seed, epoch)``, and a resumed epoch draws (and drops) its
first ``position.step`` batches again, consuming the same augmentation
randomness, before it trains on the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import torch

from ades_core.engine.runfolder.atomic_files import finite_or_none
from ades_core.engine.runfolder.config_file import fixed_config
from ades_core.engine.runfolder.rng_state import capture_rng, restore_rng
from ades_core.engine.runfolder.state_files import TrainingStateError
from ades_core.engine.stats import EpochStats
from ades_core.protocols import Stateful

if TYPE_CHECKING:  # annotations only: setup.py imports the trainer, which imports the run folder
    from ades_core.engine.setup import TrainingSetup

FINITE_PARTS = ("model", "defense", "optimizers")
"""Parts of the state that must hold no NaN/Inf for it to be written."""


@attrs.frozen
class Position:
    """Where a run stands: ``step`` steps of 0-based ``epoch`` are done (0: the epoch has not begun)."""

    epoch: int
    step: int
    global_step: int

    def describe(self) -> str:
        if self.step == 0:
            return f"after epoch {self.epoch}" if self.epoch else "before the first step"
        return f"epoch {self.epoch + 1}, step {self.step}"


@attrs.frozen
class ResumePoint:
    """A state put back into a setup: where to continue, and what the trainer keeps itself."""

    position: Position
    history: list[dict[str, Any]]
    epoch_stats: dict[str, torch.Tensor] | None
    epoch_seconds: float
    notes: list[str]


def capture_state(
    setup: TrainingSetup,
    position: Position,
    history: list[dict[str, Any]],
    stats: EpochStats | None,
    epoch_seconds: float,
) -> dict[str, Any]:
    """The training state of ``setup`` at ``position``, as a tree for :func:`save_training_state`."""
    return {
        "position": attrs.asdict(position),
        "config": fixed_config(setup.config),
        "history": finite_or_none(history),
        "model": setup.model.state_dict(),
        "defense": setup.defense.state_dict(),
        "optimizers": {
            "model": setup.optimizer.state_dict(),
            "defense": setup.defense_optimizer.state_dict() if setup.defense_optimizer else None,
        },
        "lr_schedule": setup.lr_schedule.state_dict(),
        "grad_scaler": setup.grad_scaler.state_dict() if setup.grad_scaler is not None else None,
        "rng": capture_rng(setup.device),
        "epoch_stats": stats.state_dict() if stats is not None else None,
        "epoch_seconds": float(epoch_seconds),
        "environment": {"device": str(setup.device), "torch_threads": torch.get_num_threads()},
    }


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def restore_state(setup: TrainingSetup, state: dict[str, Any]) -> ResumePoint:
    """Put ``state`` back into ``setup`` (built from the same config); return where to continue.

    Raises:
        TrainingStateError: the state belongs to another config or does not fit the setup.
    """
    try:
        saved_config = fixed_config(state["config"])  # states from before the scheduler was named
        if saved_config != fixed_config(setup.config):
            now = fixed_config(setup.config)
            changed = sorted(k for k in {*saved_config, *now} if saved_config.get(k) != now.get(k))
            raise TrainingStateError(
                f"the training state was written by a run with another config "
                f"({', '.join(changed[:3])} differ); it does not belong to this run"
            )
        setup.model.load_state_dict(state["model"], strict=True)
        defense_state = state["defense"]
        if defense_state:
            if not isinstance(setup.defense, Stateful):
                raise TrainingStateError(
                    f"defense {setup.defense.name!r} saved a state but has no load_state_dict to restore it"
                )
            setup.defense.load_state_dict(defense_state)
        optimizers = state["optimizers"]
        setup.optimizer.load_state_dict(optimizers["model"])
        if (optimizers["defense"] is None) != (setup.defense_optimizer is None):
            raise TrainingStateError(
                "the saved state and this setup disagree on whether the defense is trained"
            )
        if setup.defense_optimizer is not None:
            setup.defense_optimizer.load_state_dict(optimizers["defense"])
        setup.lr_schedule.load_state_dict(state["lr_schedule"])
        if setup.grad_scaler is not None and state["grad_scaler"] is not None:
            setup.grad_scaler.load_state_dict(state["grad_scaler"])
        notes = restore_rng(state["rng"], setup.device)
        position = Position(**state["position"])
        environment = state["environment"]
    except TrainingStateError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise TrainingStateError(
            f"the training state does not fit this run: {_first_line(exc)}"
        ) from None
    threads = torch.get_num_threads()
    if environment.get("torch_threads") != threads:
        notes.append(
            f"saved with {environment.get('torch_threads')} torch threads, resumed with {threads}: "
            "results match to rounding, not bitwise"
        )
    if environment.get("device") != str(setup.device):
        notes.append(
            f"saved on {environment.get('device')}, resumed on {setup.device}: results will differ slightly"
        )
    return ResumePoint(
        position=position,
        history=list(state["history"]),
        epoch_stats=state["epoch_stats"],
        epoch_seconds=float(state["epoch_seconds"]),
        notes=notes,
    )


__all__ = ["FINITE_PARTS", "Position", "ResumePoint", "capture_state", "restore_state"]
