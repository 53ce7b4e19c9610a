"""The training loop: optimiser steps, per-epoch evaluation, the run folder.

The trainer knows nothing about cues or budgets: it calls ``defense.step``,
backpropagates the returned loss, steps the model's SGD and the defense's own
optimiser, and records what the step reports. Statistics accumulate on the
device and are read once per ``log_every`` steps and once per epoch.

Run folder (``out``):
    config.json        the resolved config (and what the builder chose)
    metrics.jsonl      one JSON object per epoch
    model.safetensors  the model weights, with the config in the metadata
    defense.safetensors  the defense's own state (a learnable scheduler), if any
"""

from __future__ import annotations

import importlib.metadata
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import save_file

from ades_core.config import format_eps
from ades_core.engine.checkpoint import MODEL_FILE, save_model
from ades_core.engine.evaluator import evaluate_robustness
from ades_core.engine.files import append_jsonl, atomic_write, write_json
from ades_core.engine.setup import TrainingSetup
from ades_core.engine.stats import EpochStats

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
DEFENSE_FILE = "defense.safetensors"
SATURATED_SIGMA = 0.05
"""Mean sigma below this (or above 1 - this) for an epoch: the scheduler has saturated."""


class RunFolderError(ValueError):
    """The output folder cannot be used; one line."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf."""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Trainer:
    """Runs a :class:`TrainingSetup` to completion, writing its run folder.

    Args:
        setup: the wired parts, from :func:`ades_core.build`.
        console: where progress and epoch lines go (a quiet console by default
            when ``progress`` is False).
        progress: show a live rich progress bar.
        overwrite: allow an ``out`` folder that already holds a run.
    """

    def __init__(
        self,
        setup: TrainingSetup,
        *,
        console: Console | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.setup = setup
        self.console = console or Console(stderr=True, quiet=not progress)
        self.progress = progress
        self.overwrite = overwrite

    # ------------------------------------------------------------ folder
    def _prepare(self, out: Path) -> None:
        holds_run = any((out / name).exists() for name in (CONFIG_FILE, METRICS_FILE, MODEL_FILE))
        if holds_run and not self.overwrite:
            raise RunFolderError(
                f"{out} already holds a run; pass --overwrite to replace it or choose another --out"
            )
        out.mkdir(parents=True, exist_ok=True)
        (out / METRICS_FILE).unlink(missing_ok=True)
        payload = self.setup.config.to_dict()
        payload["resolved"] = self.setup.resolved | {
            "versions": {d: _version(d) for d in ("ades", "torch", "timm", "torchvision")}
        }
        write_json(out / CONFIG_FILE, payload)

    def _save(self, out: Path) -> None:
        setup = self.setup
        save_model(out / MODEL_FILE, setup.model, setup.model_spec, setup.config.to_dict())
        state = {k: v.detach().cpu().contiguous() for k, v in setup.defense.state_dict().items()}
        if state:
            atomic_write(out / DEFENSE_FILE, lambda tmp: save_file(state, str(tmp)))

    # ------------------------------------------------------------ loop
    def fit(self, out: Path) -> list[dict[str, Any]]:
        """Train all epochs; return the per-epoch metrics also written to ``metrics.jsonl``."""
        out = Path(out)
        self._prepare(out)
        setup = self.setup
        history: list[dict[str, Any]] = []
        epochs = setup.config.optim.epochs
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
            for epoch in range(epochs):
                record = self._train_epoch(epoch, bar)
                record |= self._evaluate(epoch, bar)
                history.append(record)
                append_jsonl(out / METRICS_FILE, record)
                self._save(out)
                self._report(record)
        return history

    def _train_epoch(self, epoch: int, bar: Progress) -> dict[str, Any]:
        setup = self.setup
        model, defense, loader = setup.model, setup.defense, setup.train_loader
        loader.set_epoch(epoch)
        stats = EpochStats(setup.device)
        lr = setup.optimizer.param_groups[0]["lr"]
        task = bar.add_task("", total=len(loader), phase=f"epoch {epoch + 1}/{setup.config.optim.epochs}")
        model.train()
        start = time.perf_counter()
        for step, (x, y, idx) in enumerate(loader, start=1):
            setup.optimizer.zero_grad(set_to_none=True)
            if setup.defense_optimizer is not None:
                setup.defense_optimizer.zero_grad(set_to_none=True)
            out = defense.step(model, x, y, idx)
            if setup.grad_scaler is not None:
                setup.grad_scaler.scale(out.loss).backward()
                setup.grad_scaler.step(setup.optimizer)
                if setup.defense_optimizer is not None:
                    setup.grad_scaler.step(setup.defense_optimizer)
                setup.grad_scaler.update()
            else:
                out.loss.backward()
                setup.optimizer.step()
                if setup.defense_optimizer is not None:
                    setup.defense_optimizer.step()
            stats.update(out, y)
            if step % setup.config.log_every == 0 or step == len(loader):
                self._log(bar, task, step, stats.read(), epoch)
        if setup.device.type == "cuda":
            torch.cuda.synchronize(setup.device)
        seconds = time.perf_counter() - start
        setup.lr_schedule.step()
        bar.remove_task(task)
        summary = stats.read()
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, **summary, "train_seconds": seconds}
        record["warnings"] = self._warnings(summary)
        return record

    def _log(self, bar: Progress, task: Any, step: int, live: dict[str, float], epoch: int) -> None:
        if not math.isfinite(live["train_loss"]):
            raise NonFiniteLossError(
                f"training loss is {live['train_loss']} at epoch {epoch + 1}, "
                f"within the last {self.setup.config.log_every} steps before step {step}"
            )
        text = (
            f"loss {live['train_loss']:.3f}  clean {100 * live['train_clean_acc']:.1f}%  "
            f"adv {100 * live['train_adv_acc']:.1f}%  eps {255 * live['eps_mean']:.2f}"
            f"±{255 * live['eps_std']:.2f}/255"
        )
        bar.update(task, completed=step, description=text)

    def _warnings(self, summary: dict[str, float]) -> list[str]:
        sigma = summary["sigma_mean"]
        if self.setup.resolved.get("scheduler_learnable") and (
            sigma < SATURATED_SIGMA or sigma > 1 - SATURATED_SIGMA
        ):
            return [
                f"scheduler saturated: mean sigma {sigma:.3f} this epoch (eps mean "
                f"{format_eps(summary['eps_mean'])}); the learned budget has collapsed to a bound"
            ]
        return []

    def _evaluate(self, epoch: int, bar: Progress) -> dict[str, Any]:
        setup = self.setup
        cfg = setup.config.eval
        last = epoch + 1 == setup.config.optim.epochs
        if not (last or (epoch + 1) % cfg.every == 0):
            return {"test_clean_acc": None, "test_pgd_acc": None}
        task = bar.add_task("", total=None, phase=f"eval PGD-{cfg.steps} @ {format_eps(cfg.eps)}")
        report = evaluate_robustness(
            setup.model,
            setup.test_data,
            setup.eval_attack,
            cfg.eps,
            batch_size=cfg.batch_size,
            device=setup.device,
            autocast_dtype=setup.autocast_dtype,
            seed=setup.config.seed,
        )
        bar.remove_task(task)
        return {
            "test_clean_acc": report.clean_acc,
            "test_pgd_acc": report.robust_acc,
            "test_n": report.n,
            "test_eps": report.eps,
            "test_pgd_steps": cfg.steps,
            "eval_seconds": report.seconds,
        }

    def _report(self, r: dict[str, Any]) -> None:
        line = (
            f"epoch {r['epoch']}: loss {r['train_loss']:.3f}  train clean {100 * r['train_clean_acc']:.1f}%"
            f"  adv {100 * r['train_adv_acc']:.1f}%  eps {255 * r['eps_mean']:.2f}±{255 * r['eps_std']:.2f}/255"
            f" [{255 * r['eps_min']:.2f}, {255 * r['eps_max']:.2f}]  {r['train_seconds']:.1f}s"
        )
        if r.get("test_clean_acc") is not None:
            line += (
                f"  | test clean {100 * r['test_clean_acc']:.1f}%  PGD-{r['test_pgd_steps']}"
                f" {100 * r['test_pgd_acc']:.1f}% (n={r['test_n']})"
            )
        self.console.print(line, highlight=False)
        for warning in r["warnings"]:
            self.console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
