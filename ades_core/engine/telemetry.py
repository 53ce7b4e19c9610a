"""Per-epoch budget telemetry: how the per-sample budgets are spread, what they follow, how they move.

The trainer hands every step's :class:`~ades_core.protocols.StepOutput` and
dataset indices to :meth:`BudgetTelemetry.update`, which only queues device
ops: the step's budgets ``eps`` ``(B,)`` and normalised cues ``(B, k)`` are
written into per-sample buffers ``(N,)`` and ``(N, k)`` indexed by the dataset
index (``N`` = training-set size), so each sample keeps the last values it had
in the epoch. :meth:`BudgetTelemetry.end_epoch` reads them once, computes the
epoch's record and keeps the epoch's budgets for the next epoch's comparison.
The run folder gets one JSON line per epoch in ``telemetry.jsonl``
(:data:`~ades_core.engine.runfolder.TELEMETRY_FILE`); docs/telemetry.md
describes every key. Budgets are in [0, 1] pixel scale throughout.

Under ``torchrun`` each rank holds the samples of its own batches (the ranks'
slices are disjoint); ``end_epoch`` and ``state_dict`` sum the buffers and the
per-sample counts over the ranks (every rank must call them at the same
points), so every rank computes the same global record.

The statistics are plain functions of tensors in
:mod:`ades_core.engine.telemetry_stats` (re-exported here), so they can be
checked by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ades_core.distributed import DistributedContext
from ades_core.engine.runfolder.atomic_files import append_jsonl, atomic_write, jsonl_line, read_jsonl
from ades_core.engine.runfolder.layout import TELEMETRY_FILE
from ades_core.engine.telemetry_stats import (  # noqa: F401  (re-exported: the statistics live there)
    HISTOGRAM_BINS,
    MIN_SPREAD_FRACTION,
    MIN_TARGET_R2,
    QUANTILES,
    SAMPLE_SIZE,
    STAY_TOLERANCE,
    TARGET_COLUMNS,
    _short,
    average_ranks,
    change_fractions,
    histogram_counts,
    linear_quantiles,
    pearson,
    r_squared,
    spearman,
    spread_warning,
    target_fit,
    target_warning,
)
from ades_core.errors import AdesError
from ades_core.protocols import BudgetScheduled, StepOutput


class TelemetryError(AdesError, ValueError):
    """A telemetry file or state that cannot be used; one line."""


# ---------------------------------------------------------------- statistics


class BudgetTelemetry:
    """Per-sample budgets and cues of the current and the previous epoch, on the device.

    Args:
        num_samples: ``N``, the training-set size (dataset indices lie in ``[0, N)``).
        device: where the buffers live (the run's device).
        seed: the run seed; draws the fixed sample of :data:`SAMPLE_SIZE` indices
            with its own generator (torch's global generators are not touched).
        scheduler: the defense's scheduler; when it is an ``nn.Module`` with
            parameters, their L2 norm is recorded each epoch.
        bins, sample_size: histogram bins and size of the fixed sample.
        dist: the run's context under ``torchrun`` (each epoch's figures are summed
            over its ranks), ``None`` on one process.

    The histogram range is fixed by the first budgets seen: ``[eps_min, eps_max]``
    of an adaptive budget (one that carries ``sigma``), ``[0, eps]`` of a fixed one.
    """

    def __init__(
        self,
        num_samples: int,
        device: torch.device | str,
        *,
        seed: int = 0,
        scheduler: Any = None,
        bins: int = HISTOGRAM_BINS,
        sample_size: int = SAMPLE_SIZE,
        dist: DistributedContext | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"telemetry needs at least one training sample, got {num_samples}")
        self.num_samples = num_samples
        self.dist = dist
        self.device = torch.device(device)
        self.bins = bins
        self.scheduler = scheduler
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(num_samples, generator=generator)[: min(sample_size, num_samples)]
        self.sample_idx = chosen.sort().values.to(self.device)
        self.eps = torch.zeros(num_samples, device=self.device)
        self.seen = torch.zeros(num_samples, device=self.device)
        self.cues: Tensor | None = None
        self.cue_names: tuple[str, ...] = ()
        self.targets: Tensor | None = None  # (N, 6) TARGET_COLUMNS, once a step reports a target
        self.previous_eps = torch.zeros(num_samples, device=self.device)
        self.previous_seen = torch.zeros(num_samples, device=self.device)
        self.low: float | None = None
        self.high: float | None = None
        self.adaptive = False
        self.last_record: dict[str, Any] | None = None

    @classmethod
    def for_setup(cls, setup: Any) -> BudgetTelemetry:
        """The telemetry of a :class:`~ades_core.engine.setup.TrainingSetup`."""
        return cls(
            int(setup.resolved["train_size"]),
            setup.device,
            seed=setup.config.seed,
            scheduler=setup.defense.scheduler if isinstance(setup.defense, BudgetScheduled) else None,
            dist=setup.dist,
        )

    # ------------------------------------------------------------ per step
    def update(self, out: StepOutput, idx: Tensor, finite: Tensor | None = None) -> None:
        """Record one step's budgets (and cues) under their dataset indices; device ops only.

        Args:
            out: the defense's step output (``budget.eps`` ``(B,)``, ``cues`` ``(B, k)`` or None).
            idx: ``(B,)`` int64 dataset indices on the buffers' device.
            finite: 0-d bool device tensor; a non-finite step leaves the buffers as they were.
        """
        budget = out.budget
        if self.low is None:
            self._set_range(budget.eps_min, budget.eps_max, budget.sigma is not None)
        if out.cues is not None and self.cues is None:
            self.cue_names = tuple(out.cues.names)
            self.cues = torch.zeros(self.num_samples, len(self.cue_names), device=self.device)
        eps = budget.eps.detach().float()
        seen = torch.ones_like(eps)
        cues = out.cues.values.detach().float() if out.cues is not None and self.cues is not None else None
        if finite is not None:
            eps = torch.where(finite, eps, self.eps.index_select(0, idx))
            seen = torch.where(finite, seen, self.seen.index_select(0, idx))
            if cues is not None:
                cues = torch.where(finite, cues, self.cues.index_select(0, idx))
        self.eps.index_copy_(0, idx, eps)
        self.seen.index_copy_(0, idx, seen)
        if cues is not None:
            self.cues.index_copy_(0, idx, cues)
        if out.target is not None:
            self._update_targets(out, idx, finite)

    def _update_targets(self, out: StepOutput, idx: Tensor, finite: Tensor | None) -> None:
        target = out.target
        if self.targets is None:
            self.targets = torch.zeros(self.num_samples, len(TARGET_COLUMNS), device=self.device)
        parts = (target.deviation, target.prediction, target.radius, target.broken, target.held_out)
        rows = torch.stack([p.detach().float() for p in parts] + [torch.ones_like(target.radius).float()], 1)
        if finite is not None:
            rows = torch.where(finite, rows, self.targets.index_select(0, idx))
        self.targets.index_copy_(0, idx, rows)

    def _set_range(self, eps_min: float, eps_max: float, has_sigma: bool) -> None:
        self.adaptive = has_sigma and eps_max > eps_min
        low, high = (eps_min, eps_max) if self.adaptive else (0.0, eps_max)
        self.low, self.high = float(low), float(high if high > low else low + 1 / 255)

    # ------------------------------------------------------------ per epoch
    def _global(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """This epoch's (eps, count, cues, targets) per sample, summed over ranks under torchrun."""
        ctx = self.dist
        if ctx is None:
            return self.eps, self.seen, self.cues, self.targets
        k = 0 if self.cues is None else self.cues.shape[1]
        parts = [self.eps[:, None], self.seen[:, None]] + [t for t in (self.cues, self.targets) if t is not None]
        total = ctx.all_reduce(torch.cat(parts, 1), "sum")
        count = total[:, 1]
        mean = total / count.clamp(min=1)[:, None]
        cues = mean[:, 2 : 2 + k] if self.cues is not None else None
        targets = mean[:, 2 + k :] if self.targets is not None else None
        return mean[:, 0], count, cues, targets

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """The record of 0-based ``epoch`` (also kept as ``last_record``); starts the next epoch.

        Synchronises with the device once (and all-reduces under torchrun).
        """
        eps, count, cues, targets = self._global()
        record = self._record(epoch + 1, eps, count > 0, cues, targets)
        self.previous_eps, self.previous_seen = eps.clone(), (count > 0).float()
        self.eps.zero_()
        self.seen.zero_()
        if self.cues is not None:
            self.cues.zero_()
        if self.targets is not None:
            self.targets.zero_()
        self.last_record = record
        return record

    def _record(
        self, epoch: int, eps_all: Tensor, seen: Tensor, cues_all: Tensor | None, targets: Tensor | None = None
    ) -> dict[str, Any]:
        low = self.low if self.low is not None else 0.0
        high = self.high if self.high is not None else 1 / 255
        eps = eps_all[seen].double()
        n = eps.numel()
        record: dict[str, Any] = {
            "epoch": epoch,
            "samples": n,
            "adaptive": self.adaptive,
            "eps": None,
            "histogram": {"low": low, "high": high, "counts": [0] * self.bins},
            "cues": {},
            "change": None,
            "sample": {"idx": [], "eps": [], "cues": {name: [] for name in self.cue_names}},
            "scheduler_param_norm": self._scheduler_norm(),
            "target": None,
        }
        if n == 0:
            return record
        if targets is not None:
            record["target"] = target_fit(targets[seen])
        quantiles = linear_quantiles(eps, QUANTILES).tolist()
        record["eps"] = {
            "mean": float(eps.mean()),
            "std": float(eps.std(correction=0)),
            "min": float(eps.min()),
            "max": float(eps.max()),
            "quantiles": {f"p{round(100 * q)}": v for q, v in zip(QUANTILES, quantiles)},
        }
        record["histogram"]["counts"] = histogram_counts(eps, low, high, self.bins).tolist()
        if cues_all is not None:
            cues = cues_all[seen].double()
            record["cues"] = {
                name: {"pearson": pearson(eps, cues[:, j]), "spearman": spearman(eps, cues[:, j])}
                for j, name in enumerate(self.cue_names)
            }
        both = seen & (self.previous_seen > 0)
        if bool(both.any()):
            tolerance = STAY_TOLERANCE * (high - low)
            record["change"] = change_fractions(eps_all[both], self.previous_eps[both], tolerance)
        chosen = self.sample_idx[seen[self.sample_idx]]
        sample_cues = {}
        if cues_all is not None:
            columns = cues_all[chosen].T.tolist()
            sample_cues = {name: [_short(v) for v in column] for name, column in zip(self.cue_names, columns)}
        record["sample"] = {
            "idx": chosen.tolist(),
            "eps": [_short(v) for v in eps_all[chosen].tolist()],
            "cues": sample_cues,
        }
        return record

    def _scheduler_norm(self) -> float | None:
        if not isinstance(self.scheduler, nn.Module):
            return None
        params = [p.detach().double() for p in self.scheduler.parameters()]
        if not params:
            return None
        return float(torch.sqrt(sum((p * p).sum() for p in params)))

    def warnings(self) -> list[str]:
        """Warnings on the last epoch's budgets: the spread check of adaptive budgets."""
        record = self.last_record
        if record is None or not self.adaptive or record["eps"] is None:
            return []
        warnings = [
            spread_warning(record["eps"]["std"], record["histogram"]["high"] - record["histogram"]["low"]),
            target_warning((record.get("target") or {}).get("r2")),
        ]
        return [w for w in warnings if w]

    def write(self, out: str | Path) -> None:
        """Append the last epoch's record to ``out/telemetry.jsonl`` (rank 0 calls this)."""
        if self.last_record is not None:
            append_jsonl(Path(out) / TELEMETRY_FILE, self.last_record)

    # ------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Buffers of the unfinished epoch and the previous epoch (a collective under torchrun)."""
        eps, count, cues, targets = self._global()
        state: dict[str, Any] = {
            "eps": eps,
            "seen": (count > 0).float(),
            "previous_eps": self.previous_eps,
            "previous_seen": self.previous_seen,
            "cue_names": list(self.cue_names),
            "histogram_range": None if self.low is None else [self.low, self.high],
            "adaptive": self.adaptive,
        }
        if cues is not None:
            state["cues"] = cues
        if targets is not None:
            state["targets"] = targets
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (tensors on any device)."""
        for name in ("eps", "seen", "previous_eps", "previous_seen"):
            if tuple(state[name].shape) != (self.num_samples,):
                raise TelemetryError(
                    f"telemetry state {name!r} has shape {tuple(state[name].shape)}, "
                    f"expected ({self.num_samples},): it belongs to another training set"
                )
            getattr(self, name).copy_(state[name])
        if state.get("histogram_range") is not None:
            self.low, self.high = (float(v) for v in state["histogram_range"])
            self.adaptive = bool(state.get("adaptive", False))
        names = tuple(state.get("cue_names", ()))
        if "cues" in state:
            self.cue_names = names
            self.cues = state["cues"].to(self.device, torch.float32).clone()
        if "targets" in state:
            self.targets = state["targets"].to(self.device, torch.float32).clone()


# ---------------------------------------------------------------- the file


def read_telemetry(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/telemetry.jsonl``, in epoch order.

    Raises:
        TelemetryError: the file is missing, empty or not JSON lines.
    """
    path = Path(run_dir) / TELEMETRY_FILE
    if not path.is_file():
        raise TelemetryError(
            f"{run_dir} holds no {TELEMETRY_FILE}: it is not a training run folder, or was trained "
            "before ades recorded budget telemetry"
        )
    return read_jsonl(path, TelemetryError)


def keep_finished_epochs(run_dir: str | Path, epochs: int) -> None:
    """Rewrite ``telemetry.jsonl`` with only the records of epochs ``1..epochs`` (on resume).

    Lines past the training state (written after it, before a crash) and a
    torn last line are dropped, as ``metrics.jsonl`` is rewritten from the
    state's history; the kept ones are rewritten as strict JSON (a NaN or
    Inf of an older file becomes null). A missing file stays missing.
    """
    path = Path(run_dir) / TELEMETRY_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] <= epochs:
            kept.append(jsonl_line(record))  # strict JSON, also for lines written before it was
    text = "".join(kept)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


__all__ = [
    "HISTOGRAM_BINS",
    "MIN_SPREAD_FRACTION",
    "MIN_TARGET_R2",
    "QUANTILES",
    "SAMPLE_SIZE",
    "STAY_TOLERANCE",
    "BudgetTelemetry",
    "TelemetryError",
    "average_ranks",
    "change_fractions",
    "histogram_counts",
    "keep_finished_epochs",
    "linear_quantiles",
    "pearson",
    "r_squared",
    "read_telemetry",
    "spearman",
    "spread_warning",
    "target_fit",
    "target_warning",
]
