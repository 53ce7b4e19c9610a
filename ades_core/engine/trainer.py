"""The training loop: epochs, per-epoch evaluation, logging and the cadence of saving.

The trainer knows nothing about cues or budgets: each minibatch is one
:func:`~ades_core.engine.step.training_step` (the defense's loss, backward,
the optimiser steps, the after-step hooks), and the trainer records what the
step reports. Statistics (and the non-finite flag of every step) accumulate
on the device and are read once per ``log_every`` steps, before each
checkpoint and once per epoch.

The run folder and its resumable training state are written by
:class:`~ades_core.engine.runfolder.writer.RunFolderWriter`: the state at the
end of every epoch and, with ``checkpoint_every``, every that many steps;
``Trainer(setup, resume=True).fit(out)`` continues from it, and on the CPU
with the same thread count the result is bitwise the uninterrupted run's.

Under ``torchrun`` (``setup.dist``) every rank runs this loop in lock-step:
the training forward goes through ``setup.train_model`` (DDP), the defense's
own gradients are averaged over ranks before its optimiser steps, the epoch
statistics are reduced over ranks whenever they are read, and the held-out
check is sharded. Only rank 0 writes the run folder and shows progress.
Resuming under ``torchrun`` is refused (see docs/distributed.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ades_core.config import format_eps
from ades_core.distributed import broadcast_module
from ades_core.engine.epoch_lines import SATURATED_SIGMA, epoch_line, epoch_warnings, progress_text
from ades_core.engine.nonfinite import NonFiniteError, StepGuard
from ades_core.engine.placement import check_placement
from ades_core.engine.runfolder.atomic_files import finite_or_none
from ades_core.engine.runfolder.config_file import RunFolderError
from ades_core.engine.runfolder.layout import CONFIG_FILE, DEFENSE_FILE, METRICS_FILE, TENSORBOARD_DIR
from ades_core.engine.runfolder.state_capture import Position, ResumePoint
from ades_core.engine.runfolder.writer import RunFolderWriter
from ades_core.engine.stats import EpochStats
from ades_core.engine.step import training_step
from ades_core.engine.tensorboard import NullBoard, open_board
from ades_core.engine.telemetry import BudgetTelemetry
from ades_core.engine.validation import RunSelection, held_out_check
from ades_core.protocols import EpochAware, replays_of

if TYPE_CHECKING:  # annotations only: setup.py imports the trainer
    from ades_core.engine.setup import TrainingSetup

NonFiniteLossError = NonFiniteError  # the name before the guard covered gradients too

__all__ = [
    "CONFIG_FILE",
    "DEFENSE_FILE",
    "METRICS_FILE",
    "NonFiniteError",
    "NonFiniteLossError",
    "RunFolderError",
    "SATURATED_SIGMA",
    "Trainer",
]


class Trainer:
    """Runs a :class:`TrainingSetup` to completion, writing its run folder.

    Args:
        setup: the wired parts, from :func:`ades_core.build`.
        console: where progress and epoch lines go (a quiet console by default
            when ``progress`` is False).
        progress: show a live rich progress bar (only when ``console`` is a terminal;
            otherwise one plain line per epoch).
        overwrite: replace a run already in ``out`` (its files are deleted
            once training starts, not before).
        resume: continue the run in ``out`` from its training state; ``setup``
            must be built from that run's config (:func:`~ades_core.engine.runfolder.config_file.resume_config`).
    """

    def __init__(
        self,
        setup: TrainingSetup,
        *,
        console: Console | None = None,
        progress: bool = True,
        overwrite: bool = False,
        resume: bool = False,
    ) -> None:
        if overwrite and resume:
            raise RunFolderError(
                "overwrite and resume exclude each other: resume continues a run, overwrite replaces it"
            )
        check_placement(setup.model, device=setup.device, data_device=setup.train_loader.device)
        self.setup = setup
        self.dist = setup.dist
        self.is_main = self.dist is None or self.dist.is_main
        if resume and self.dist is not None:
            raise RunFolderError(
                "resuming under torchrun is not supported; resume the run in one process "
                "(ades run --resume DIR), or start it again"
            )
        progress = progress and self.is_main
        self.console = console or Console(stderr=True, quiet=not progress)
        if not self.is_main:
            self.console.quiet = True
        self.progress = progress and self.console.is_terminal  # a batch job's log gets plain lines
        self.overwrite = overwrite
        self.resume = resume
        self.history: list[dict[str, Any]] = []
        self.global_step = 0
        self.out = Path(".")
        self.folder: RunFolderWriter  # the run folder's writer, made by fit(out)
        self.telemetry = BudgetTelemetry.for_setup(setup)
        self.selection = RunSelection(setup)
        self.board: NullBoard = NullBoard()
        config = setup.config
        self.guard = StepGuard(
            config.on_nonfinite,
            [setup.model, setup.defense],
            [o for o in (setup.optimizer, setup.defense_optimizer) if o is not None],
            check_grads=setup.grad_scaler is None,
        )

    # ------------------------------------------------------------ loop
    def fit(self, out: Path) -> list[dict[str, Any]]:
        """Train the remaining epochs; return every epoch's metrics (also in ``metrics.jsonl``)."""
        self.out = out = Path(out)
        self.folder = RunFolderWriter(
            self.setup, out, telemetry=self.telemetry, selection=self.selection,
            main=self.is_main, overwrite=self.overwrite, resume=self.resume,
        )
        point = self.folder.start()
        setup = self.setup
        epochs = setup.epochs
        if epochs != setup.config.optim.epochs:
            self.console.print(
                f"{setup.defense.name} replays each minibatch {replays_of(setup.defense)} "
                f"times: {epochs} pass{'es' if epochs != 1 else ''} over the data for --epochs "
                f"{setup.config.optim.epochs}",
                highlight=False,
            )
        first_epoch = 0
        if point is not None:
            self.history = [finite_or_none(record) for record in point.history]  # states before strict JSON: NaN
            self.global_step = point.position.global_step
            first_epoch = point.position.epoch
            self.console.print(f"resuming {out} {point.position.describe()}", highlight=False)
            for note in point.notes:
                self.console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
            if first_epoch >= epochs:
                self.console.print(f"{out} has finished all {epochs} epochs; nothing to do", highlight=False)
            elif self.selection.stopped_epoch is not None:
                self.console.print(f"{out} {self.selection.describe_stop()}; nothing to do", highlight=False)
        self.board = open_board(
            setup.config.logging.tensorboard, out / TENSORBOARD_DIR, main_rank=self.is_main,
            purge_step=self.global_step if point is not None else None,
        )
        with Progress(
            TextColumn("[bold]{task.fields[phase]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            disable=not self.progress,
            transient=True,
        ) as bar:
            for epoch in range(first_epoch, epochs):
                if self.selection.stopped_epoch is not None:
                    break
                resumed = point if point is not None and epoch == point.position.epoch else None
                record = self._train_epoch(epoch, bar, resumed)
                record |= self._evaluate(epoch, bar)
                record |= self.selection.end_epoch(epoch, due=self._due(epoch))
                # the history holds what metrics.jsonl holds: null for a figure that is not finite
                self.history.append(finite_or_none(record))
                self.folder.write_epoch(record)
                self._save_files(out)
                self.folder.checkpoint(Position(epoch + 1, 0, self.global_step), self.history, None, 0.0)
                self.board.epoch(record, self.telemetry.last_record)
                self.console.print(epoch_line(record, self.setup.config.norm), highlight=False, soft_wrap=True)
                for warning in record["warnings"]:
                    self.console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
                if record.get("early_stop"):
                    self.console.print(self.selection.describe_stop(), highlight=False, soft_wrap=True)
        self.board.close()
        return self.history

    def _save_files(self, out: Path) -> None:
        """The epoch's model files (:meth:`RunFolderWriter.save_files`), between its lines and its state."""
        self.folder.save_files()

    def _train_epoch(self, epoch: int, bar: Progress, resumed: ResumePoint | None) -> dict[str, Any]:
        setup = self.setup
        config = setup.config
        model, defense, loader = setup.train_model, setup.defense, setup.train_loader
        defense_params = (
            [p for p in defense.parameters() if p.requires_grad]
            if self.dist is not None and setup.defense_optimizer is not None
            else []
        )
        loader.set_epoch(epoch)
        replays = replays_of(defense)
        if isinstance(defense, EpochAware):
            defense.start_epoch(epoch, setup.epochs)
        stats = EpochStats(setup.device, self.dist)
        done, seconds_before = 0, 0.0
        if resumed is not None and resumed.position.step:
            done, seconds_before = resumed.position.step, resumed.epoch_seconds
            stats.load_state_dict(resumed.epoch_stats)
        lr = setup.optimizer.param_groups[0]["lr"]
        steps = len(loader)
        phase = f"epoch {epoch + 1}/{setup.epochs}"
        task = bar.add_task("", total=steps, completed=done, phase=phase)
        model.train()
        start = time.perf_counter()
        for step, (x, y, idx) in enumerate(loader, start=1):
            if step <= done:
                continue  # drawn with its augmentation randomness; trained on before the interruption
            for _ in range(replays):
                lr = setup.optimizer.param_groups[0]["lr"]  # a host float: the rate of this epoch's last step
                out, finite = self._update(model, x, y, idx, defense_params)
                stats.update(out, y, finite, step)
                self.telemetry.update(out, idx, finite)
                self.selection.after_update()
                if setup.lr_per_iteration:
                    setup.lr_schedule.step()
            self.global_step += 1
            last = step == steps
            if step % config.log_every == 0 or last:
                live = stats.read()
                self._stop_if_nonfinite(live, epoch)
                bar.update(task, completed=step, description=progress_text(live, self.setup.config.norm))
                self.board.step(self.global_step, live["train_loss"], setup.optimizer.param_groups[0]["lr"])
            if config.checkpoint_every and step % config.checkpoint_every == 0 and not last:
                self._stop_if_nonfinite(stats.read(), epoch)
                seconds = seconds_before + time.perf_counter() - start
                self.folder.checkpoint(Position(epoch, step, self.global_step), self.history, stats, seconds)
        if setup.device.type == "cuda":
            torch.cuda.synchronize(setup.device)
        seconds = seconds_before + time.perf_counter() - start
        if self.dist is not None:
            # without SyncBatchNorm each rank's BN statistics drifted with its own batches:
            # take rank 0's, so evaluation and the saved model are the same on every rank
            broadcast_module(setup.model, self.dist, buffers_only=True)
        if not setup.lr_per_iteration:
            setup.lr_schedule.step()
        bar.remove_task(task)
        summary = stats.read()
        self.telemetry.end_epoch(epoch)  # under torchrun a collective, like stats.read()
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, **summary, "train_seconds": seconds}
        learnable = bool(setup.resolved.get("scheduler_learnable"))
        record["warnings"] = (
            epoch_warnings(summary, scheduler_learnable=learnable, norm=self.setup.config.norm) + self.telemetry.warnings()
        )
        return record

    def _update(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, defense_params: list
    ) -> tuple[Any, torch.Tensor]:
        """One :func:`~ades_core.engine.step.training_step` on ``(x, y, idx)``; ``defense_params``:
        the defense's parameters whose gradients are averaged over ranks (empty on one process)."""
        setup = self.setup
        optimizers = [o for o in (setup.optimizer, setup.defense_optimizer) if o is not None]
        return training_step(
            model, setup.defense, x, y, idx,
            optimizers=optimizers, grad_scaler=setup.grad_scaler, guard=self.guard, averaged=defense_params,
            dist=self.dist,
        )

    def _stop_if_nonfinite(self, live: dict[str, Any], epoch: int) -> None:
        if not live["nonfinite_steps"] or self.guard.mode != "stop":
            return
        raise NonFiniteError(
            f"non-finite loss or gradient at epoch {epoch + 1}, step {live['first_nonfinite_step']}: "
            f"training stopped; {self.folder.kept_state()}, or pass --on-nonfinite skip to skip such steps"
        )

    def _due(self, epoch: int) -> bool:
        """Whether the held-out checks run after 0-based ``epoch``: every ``eval.every`` epochs and the last."""
        return epoch + 1 == self.setup.epochs or (epoch + 1) % self.setup.config.eval.every == 0

    def _evaluate(self, epoch: int, bar: Progress) -> dict[str, Any]:
        setup = self.setup
        cfg = setup.config.eval
        if not self._due(epoch):
            return {"test_clean_acc": None, "test_pgd_acc": None}
        norm = setup.config.norm
        task = bar.add_task("", total=None, phase=f"eval {norm} PGD-{cfg.steps} @ {format_eps(cfg.eps, norm)}")
        report = held_out_check(setup, setup.model, setup.test_data, self.dist)
        bar.remove_task(task)
        return {
            "test_clean_acc": report.clean_acc,
            "test_pgd_acc": report.robust_acc,
            "test_n": report.n,
            "test_eps": report.eps,
            "test_norm": norm,
            "test_pgd_steps": cfg.steps,
            "eval_seconds": report.seconds,
        }


