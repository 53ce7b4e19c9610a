"""What the trainer writes into its run folder, and what it reads back from it when a run resumes.

:class:`RunFolderWriter` is the trainer's one door to the folder:

* :meth:`~RunFolderWriter.start`: a new run checks the folder
  (:func:`.config_file.check_new_run`), clears it and writes ``config.json``; a
  resumed run reads its training state back into the setup, the telemetry and
  the weight selection, and rewrites ``metrics.jsonl`` and ``telemetry.jsonl``
  to the epochs that state has finished. Everything that can fail happens
  before the first file is written.
* after every epoch: :meth:`~RunFolderWriter.write_epoch` (the epoch's lines),
  :meth:`~RunFolderWriter.save_files` (the model, the defense's state, the best
  and averaged weights), :meth:`~RunFolderWriter.checkpoint` (the training state);
* :meth:`~RunFolderWriter.checkpoint` also every ``checkpoint_every`` steps.

Under ``torchrun`` only rank 0 writes; the other ranks take part in the
collectives a checkpoint needs (the telemetry's and the statistics' sums) and
write nothing.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import save_file

from ades_core.engine.runfolder.atomic_files import append_jsonl, atomic_write, jsonl_line, write_json
from ades_core.engine.runfolder.config_file import RunFolderError, check_new_run, check_same_data
from ades_core.engine.runfolder.layout import CONFIG_FILE, DEFENSE_FILE, METRICS_FILE, clear_run
from ades_core.engine.runfolder.model_files import MODEL_FILE, save_model
from ades_core.engine.runfolder.state_capture import (
    FINITE_PARTS,
    Position,
    ResumePoint,
    capture_state,
    restore_state,
)
from ades_core.engine.runfolder.state_files import (
    STATE_DIR,
    TrainingStateError,
    load_training_state,
    save_training_state,
)
from ades_core.engine.stats import EpochStats
from ades_core.engine.telemetry import keep_finished_epochs

if TYPE_CHECKING:  # annotations only: setup.py imports the trainer, which imports this module
    from ades_core.engine.setup import TrainingSetup
    from ades_core.engine.telemetry import BudgetTelemetry
    from ades_core.engine.validation import RunSelection


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RunFolderWriter:
    """The run folder ``out`` of one training run (see the module docstring).

    Args:
        setup: the run's wired parts; its config goes to ``config.json``.
        out: the run folder.
        telemetry, selection: what the trainer keeps beside the setup; their
            state is part of the training state.
        main: whether this process writes (rank 0, or the only process).
        overwrite: replace a run already in ``out``; resume: continue it.

    Attributes:
        last_saved: where the last training state written stands, or ``None``.
    """

    def __init__(
        self,
        setup: TrainingSetup,
        out: Path,
        *,
        telemetry: BudgetTelemetry,
        selection: RunSelection,
        main: bool,
        overwrite: bool,
        resume: bool,
    ) -> None:
        self.setup, self.out = setup, Path(out)
        self.telemetry, self.selection = telemetry, selection
        self.main, self.overwrite, self.resume = main, overwrite, resume
        self.last_saved: Position | None = None

    # ------------------------------------------------------------ start
    def start(self) -> ResumePoint | None:
        """Prepare the folder; return the point to resume from, if any.

        Everything that can fail (folder checks, reading and restoring the
        state) happens before the first file is written.
        """
        if not self.main:
            return None  # rank 0 writes the folder; the others only train
        out = self.out
        if not self.resume:
            check_new_run(out, self.setup.config, overwrite=self.overwrite)
            out.mkdir(parents=True, exist_ok=True)
            clear_run(out)
            self._write_config()
            return None
        if not (out / CONFIG_FILE).is_file():
            raise RunFolderError(f"{out} holds no run to resume (no {CONFIG_FILE})")
        check_same_data(out, self.setup.resolved)
        point = self._restore()
        if point is None and (out / METRICS_FILE).is_file() and (out / METRICS_FILE).stat().st_size:
            raise RunFolderError(
                f"{out} holds finished epochs but no training state ({STATE_DIR}/ is missing); "
                "it cannot be resumed: pass --overwrite to start it again"
            )
        self._write_config()
        history = point.history if point is not None else []
        text = "".join(jsonl_line(record) for record in history)
        atomic_write(out / METRICS_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        keep_finished_epochs(out, len(history))
        if point is not None:
            self.last_saved = point.position
        return point

    def _restore(self) -> ResumePoint | None:
        """Read the training state back into the setup, the telemetry and the selection."""
        state = load_training_state(self.out)
        if state is None:
            return None
        point = restore_state(self.setup, state)
        if state.get("telemetry") is not None:  # absent: states from before telemetry
            self.telemetry.load_state_dict(state["telemetry"])
        if state.get("selection") is not None:  # absent: states from before selection
            try:
                self.selection.load_state_dict(state["selection"])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise TrainingStateError(f"the training state does not fit this run: {exc}") from None
        return point

    def _write_config(self) -> None:
        payload = self.setup.config.to_dict()
        payload["resolved"] = self.setup.resolved | {
            "versions": {d: _version(d) for d in ("ades", "torch", "timm", "torchvision")}
        }
        write_json(self.out / CONFIG_FILE, payload)

    # ------------------------------------------------------------ every epoch
    def write_epoch(self, record: dict[str, Any]) -> None:
        """Append the finished epoch's line to ``metrics.jsonl`` and its telemetry to ``telemetry.jsonl``."""
        if self.main:
            append_jsonl(self.out / METRICS_FILE, record)
            self.telemetry.write(self.out)

    def save_files(self) -> None:
        """Write the model, the defense's own state (if any) and the selection's weights."""
        if not self.main:
            return
        setup, out = self.setup, self.out
        save_model(out / MODEL_FILE, setup.model, setup.model_spec, setup.config.to_dict())
        state = {k: v.detach().cpu().contiguous() for k, v in setup.defense.state_dict().items()}
        if state:
            atomic_write(out / DEFENSE_FILE, lambda tmp: save_file(state, str(tmp)))
        self.selection.save_files(out)

    def checkpoint(self, position: Position, history: list[dict[str, Any]], stats: EpochStats | None, seconds: float) -> None:
        """Write the training state at ``position`` (callers have checked the non-finite flag).

        ``history``: the finished epochs' records; ``stats``: the unfinished
        epoch's running sums (``None`` at an epoch's end); ``seconds``: its
        training time so far.

        Raises:
            TrainingStateError: the state could not be written (the previous one is kept).
        """
        telemetry = self.telemetry.state_dict()  # under torchrun a collective: every rank takes part
        if self.setup.dist is not None:
            if stats is not None:  # the global sums (a collective: every rank takes part)
                snapshot = EpochStats(self.setup.device)
                snapshot.load_state_dict(stats.global_state_dict())
                stats = snapshot
            if not self.main:
                self.last_saved = position
                return
        state = capture_state(self.setup, position, history, stats, seconds)
        state["telemetry"] = telemetry
        state["selection"] = self.selection.state_dict()
        try:
            save_training_state(self.out, state, finite=FINITE_PARTS)
        except OSError as exc:  # a full disk, a vanished mount: say so, keep the previous state
            previous = self.last_saved.describe() if self.last_saved else "none"
            raise TrainingStateError(
                f"could not write the training state to {self.out / STATE_DIR} ({exc}); "
                f"the previous one ({previous}) is kept"
            ) from None
        self.last_saved = position

    def kept_state(self) -> str:
        """Which training state a stopped run leaves, and how to continue from it (for error messages)."""
        if self.last_saved is None:
            return "no training state had been written yet"
        return (
            f"the last good training state ({self.last_saved.describe()}) is kept in "
            f"{self.out / STATE_DIR}; fix the cause and continue with --resume {self.out}"
        )


__all__ = ["RunFolderWriter"]
