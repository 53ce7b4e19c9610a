"""Atomic file writes: a crash never leaves a half-written file under the final name.

Every JSON file the engine writes is strict JSON (RFC 8259): a figure that is
missing or not finite (NaN, +-Inf, e.g. the mean sigma of a defense without
one) is written as ``null``, never as the ``NaN``/``Infinity`` tokens that
Python's ``json`` emits by default and other readers reject.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened; renames there are durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, rename it to ``path``.

    Readers see the old file or the new one, never a mix; after a crash the
    old file is intact and at most a ``.<name>.*.tmp`` file is left beside it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (and writers that recreate the file) make 0600
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-Inf) in it replaced by ``None``.

    Recurses into dicts, lists and tuples (tuples come back as lists, as JSON
    has them); everything else is returned as it is.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def strict_json(payload: Any, **dumps: Any) -> str:
    """``payload`` as strict JSON text: non-finite floats become ``null`` (:func:`finite_or_none`).

    ``dumps``: further keyword arguments of :func:`json.dumps` (``indent``, ``sort_keys``).
    """
    return json.dumps(finite_or_none(payload), allow_nan=False, **dumps)


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented strict JSON (:func:`strict_json`), atomically."""
    text = strict_json(payload, indent=2) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def jsonl_line(record: dict[str, Any]) -> str:
    """One line of a JSON-lines file: ``record`` as strict JSON (:func:`strict_json`) and a newline."""
    return strict_json(record) + "\n"


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON object as a strict-JSON line (:func:`jsonl_line`) and flush it to disk."""
    line = jsonl_line(record)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path, error: type[Exception]) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (blank lines skipped), at least one.

    Raises:
        error: one line naming the file and the line that is not JSON, or saying
            the file is empty (no epoch has finished yet).
    """
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise error(f"{path}, line {number}: not JSON ({exc.msg})") from None
    if not records:
        raise error(f"{path} is empty: no epoch has finished yet")
    return records
