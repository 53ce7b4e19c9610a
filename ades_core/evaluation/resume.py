"""Resumable evaluation: each attacked batch's per-sample result kept on disk beside ``eval.json``.

An AutoAttack run on a large model takes hours; a killed one must not start
over. Every attacked batch of an evaluation is already deterministic on its
own (its random generator is seeded from the evaluation seed and the global
index of its first sample, :func:`~ades_core.evaluation.sharding.batch_seed`),
so a batch's result can be stored when it finishes and reused on resume: the
resumed run skips the stored batches and attacks the others from the same
seeds, which gives the per-sample result of an uninterrupted run.

:class:`ResumeStore` is one JSON file per process, ``<eval stem>.resume.json``
beside the report (``<eval stem>.resume.rank<R>-of-<W>.json`` under
``torchrun``, one per shard). It holds

* a **fingerprint** of everything the result depends on: the model file's
  SHA-256, the test images' SHA-256, the attacks and their settings, the
  budget, sweep, seed, batch size, precision, masking-check settings and the
  number of ranks. Resuming with any of these changed is refused with one
  line (:class:`ResumeMismatchError`);
* per **row** (an attack at a budget, or a masking check's run): the flags of
  each finished batch, keyed by the global index of its first sample.

The file is rewritten atomically at most every ``save_every`` seconds and
when a row finishes, and removed once ``eval.json`` is written.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ades_core.engine.runfolder.atomic_files import write_json
from ades_core.errors import AdesError

FORMAT = "ades-eval-resume"
VERSION = 1


class ResumeMismatchError(AdesError, ValueError):
    """A resume state made with other settings, another model or other data; one line."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_sha256(*tensors: Tensor) -> str:
    """SHA-256 of the tensors' bytes on the CPU (contiguous), in order."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def state_path(report: str | Path, rank: int = 0, world_size: int = 1) -> Path:
    """Where the resume state of the evaluation written to ``report`` lives, for one rank."""
    report = Path(report)
    stem = report.name[: -len(".json")] if report.name.endswith(".json") else report.name
    suffix = "" if world_size == 1 else f".rank{rank}-of-{world_size}"
    return report.with_name(f"{stem}.resume{suffix}.json")


def _flags_text(flags: Tensor) -> str:
    return "".join("1" if v else "0" for v in flags.tolist())


def _flags(text: str) -> Tensor:
    return torch.tensor([c == "1" for c in text], dtype=torch.bool)


def _first_difference(stored: dict[str, Any], current: dict[str, Any]) -> str:
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            if key == "model_sha256":
                return "another model file (its SHA-256 differs)"
            if key == "data_sha256":
                return "other test images (their SHA-256 differs)"
            return f"another {key} ({json.dumps(stored.get(key))[:80]} there, {json.dumps(current.get(key))[:80]} now)"
    return "other settings"


class RowCheckpoint:
    """The stored batches of one row; :meth:`get` a finished batch, :meth:`put` a new one."""

    def __init__(self, store: ResumeStore, key: str) -> None:
        self.store = store
        self.key = key
        self.batches: dict[str, str] = store.rows.setdefault(key, {})

    def get(self, first: int, size: int) -> Tensor | None:
        """bool ``(size,)`` of the batch starting at global index ``first``, or ``None`` if not stored."""
        text = self.batches.get(str(first))
        if text is None or len(text) != size:
            return None
        return _flags(text)

    def put(self, first: int, flags: Tensor) -> None:
        """Store bool ``(size,)`` (on any device) of the batch starting at ``first``."""
        self.batches[str(first)] = _flags_text(flags.cpu())
        self.store.save()

    def finish(self) -> None:
        """The row is complete: write the store now."""
        self.store.save(force=True)


class ResumeStore:
    """One process's resume state (see the module docstring).

    Args:
        path: the state file.
        fingerprint: what the results depend on (JSON-serialisable dict).
        resume: continue from the file at ``path`` if there is one; its
            fingerprint must equal ``fingerprint``. Without it any old file is
            replaced.
        save_every: seconds between writes of the file (rows always write when done).
    """

    def __init__(self, path: str | Path, fingerprint: dict[str, Any], *, resume: bool, save_every: float = 30.0) -> None:
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # the form it has after a round trip
        self.save_every = save_every
        self.rows: dict[str, dict[str, str]] = {}
        self.resumed_batches = 0
        self.loaded = False
        """Whether an earlier state was read (``resume`` and a file at ``path``)."""
        self._saved_at = 0.0
        if resume and self.path.is_file():
            self._load()
            self.loaded = True
        self.save(force=True)

    def _load(self) -> None:
        try:
            payload = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ResumeMismatchError(f"cannot read the resume state {self.path}: {exc}") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ResumeMismatchError(f"{self.path} is not an ades evaluation resume state")
        stored = payload.get("fingerprint", {})
        if stored != self.fingerprint:
            raise ResumeMismatchError(
                f"the resume state {self.path} was made with {_first_difference(stored, self.fingerprint)}; "
                "run without --resume to start over"
            )
        self.rows = payload.get("rows", {})
        self.resumed_batches = sum(len(batches) for batches in self.rows.values())

    def row(self, key: str) -> RowCheckpoint:
        """The checkpoint of one row (``pgd20@0.03137``, ``check:pgd20@0.0627``, ...)."""
        return RowCheckpoint(self, key)

    def save(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._saved_at < self.save_every:
            return
        write_json(self.path, {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "rows": self.rows})
        self._saved_at = now

    def remove(self) -> None:
        """The evaluation is complete and reported: the state is no longer needed."""
        self.path.unlink(missing_ok=True)
