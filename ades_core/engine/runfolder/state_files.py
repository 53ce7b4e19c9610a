"""The training-state files of a run folder: written atomically, verified when read.

A run folder keeps its resumable state in ``checkpoint/``::

    checkpoint/state.json                      the pointer to the tensors, and all non-tensor state
    checkpoint/tensors-<random>.safetensors    the tensors that state.json names, nothing else

Writing a state (:func:`save_training_state`):

1. the tensors go to a *new* ``tensors-<random>.safetensors`` (temporary file,
   fsync, rename, fsync of the folder), and its SHA-256 is taken;
2. ``state.json``, naming that file and its hash, replaces the old one the
   same way; this rename is the moment the new state becomes current;
3. tensor files that ``state.json`` no longer names, and temporary files a
   crash left behind, are deleted.

A crash (SIGKILL, power loss) before step 2's rename leaves the old
``state.json`` naming the old tensor file, which step 3 has not deleted yet:
the previous state stays whole. After it, the new one is whole. The pair can
never be mixed: ``state.json`` carries the tensor file's name, size and
hash, and its own content hash.

Reading (:func:`load_training_state`) checks the JSON, its hash, the tensor
file's size and hash, then parses it with safetensors. Nothing is unpickled:
tensors come from safetensors, everything else from JSON. A truncated,
edited or foreign file is a :class:`TrainingStateError` with one line.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ades_core.engine.runfolder.atomic_files import atomic_write, fsync_dir
from ades_core.engine.runfolder.state_codec import StateCodecError, all_finite, decode, encode, tensor_names
from ades_core.errors import AdesError

STATE_DIR = "checkpoint"
STATE_FILE = "state.json"
FORMAT = "ades-training-state"
FORMAT_VERSION = 1
_TENSORS_PREFIX = "tensors-"
_TENSORS_SUFFIX = ".safetensors"



class TrainingStateError(AdesError, ValueError):
    """A training state that is missing, truncated, tampered with or does not fit; one line."""


class NonFiniteStateError(TrainingStateError):
    """A state holding NaN or Inf where it must not: refused, the last good state is kept."""


def state_folder(run_folder: str | Path) -> Path:
    return Path(run_folder) / STATE_DIR


def has_training_state(run_folder: str | Path) -> bool:
    return (state_folder(run_folder) / STATE_FILE).is_file()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_json(tree: Any) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def save_training_state(
    run_folder: str | Path, state: dict[str, Any], *, finite: Iterable[str] = ()
) -> Path:
    """Write ``state`` (a tree of tensors, numbers, strings, lists and dicts) atomically.

    Args:
        run_folder: the run folder; the files go to ``run_folder/checkpoint/``.
        state: the tree; its tensors go to safetensors, the rest to JSON.
        finite: top-level keys of ``state`` whose floating tensors must all be
            finite; a NaN or Inf there raises :class:`NonFiniteStateError` and
            nothing is written (the previous state stays current).

    Returns:
        the path of ``state.json``.
    """
    folder = state_folder(run_folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Any] = {}
    try:
        tree = encode(state, tensors)
    except StateCodecError as exc:
        raise TrainingStateError(str(exc)) from None
    prefixes = tuple(f"{key}/" for key in finite)
    bad = all_finite({k: t for k, t in tensors.items() if k.startswith(prefixes)})
    if bad:
        raise NonFiniteStateError(
            f"the training state holds NaN or Inf in {', '.join(bad[:3])}"
            f"{' and more' if len(bad) > 3 else ''}; it was not written"
        )

    name = f"{_TENSORS_PREFIX}{uuid.uuid4().hex[:16]}{_TENSORS_SUFFIX}"
    digest: dict[str, Any] = {}

    def write_tensors(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        digest["sha256"] = _sha256_file(tmp)
        digest["bytes"] = tmp.stat().st_size

    atomic_write(folder / name, write_tensors)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tensors_file": name,
        "tensors_sha256": digest["sha256"],
        "tensors_bytes": digest["bytes"],
        "state_sha256": _sha256_json(tree),
        "state": tree,
    }
    text = json.dumps(document, indent=1, allow_nan=False) + "\n"  # strict: the codec tags NaN/Inf
    atomic_write(folder / STATE_FILE, lambda tmp: tmp.write_text(text))
    _remove_stale(folder, keep=name)
    return folder / STATE_FILE


def _remove_stale(folder: Path, keep: str) -> None:
    """Delete tensor files other than ``keep`` and temporary files left by crashes."""
    for path in folder.iterdir():
        stale_tensors = path.name.startswith(_TENSORS_PREFIX) and path.name != keep
        leftover = path.name.startswith(".") and path.name.endswith(".tmp")
        if stale_tensors or leftover:
            path.unlink(missing_ok=True)
    fsync_dir(folder)


def load_training_state(run_folder: str | Path) -> dict[str, Any] | None:
    """The state last written to ``run_folder``, or ``None`` when it holds none.

    Raises:
        TrainingStateError: ``state.json`` or its tensor file is truncated,
            edited, missing or not an ades training state.
    """
    folder = state_folder(run_folder)
    pointer = folder / STATE_FILE
    if not pointer.is_file():
        return None
    try:
        document = json.loads(pointer.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingStateError(
            f"{pointer} is truncated or not JSON ({exc}); the state cannot be read"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TrainingStateError(f"{pointer} is not an ades training state")
    if document.get("format_version") != FORMAT_VERSION:
        raise TrainingStateError(
            f"{pointer} has format version {document.get('format_version')!r}; "
            f"this ades reads version {FORMAT_VERSION}"
        )
    try:
        tree = document["state"]
        name = document["tensors_file"]
        expected_hash, expected_bytes = document["tensors_sha256"], document["tensors_bytes"]
        recorded_hash = document["state_sha256"]
    except KeyError as exc:
        raise TrainingStateError(
            f"{pointer} lacks the field {exc.args[0]!r}; it was edited or truncated"
        ) from None
    if _sha256_json(tree) != recorded_hash:
        raise TrainingStateError(f"{pointer} does not match its own hash; it was edited or corrupted")
    if not isinstance(name, str) or "/" in name or "\\" in name or not name.startswith(_TENSORS_PREFIX):
        raise TrainingStateError(f"{pointer} names an invalid tensor file {name!r}")
    tensor_file = folder / name
    if not tensor_file.is_file():
        raise TrainingStateError(f"{tensor_file}, named by {pointer}, is missing")
    size = tensor_file.stat().st_size
    if size != expected_bytes:
        raise TrainingStateError(
            f"{tensor_file} holds {size} bytes but {expected_bytes} were written; "
            "it is truncated or replaced"
        )
    if _sha256_file(tensor_file) != expected_hash:
        raise TrainingStateError(
            f"{tensor_file} does not match the hash in {pointer}; it was modified or corrupted"
        )
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TrainingStateError(f"{tensor_file} is not a readable safetensors file: {exc}") from None
    missing = tensor_names(tree) - set(tensors)
    if missing:
        raise TrainingStateError(
            f"{tensor_file} lacks tensors {sorted(missing)[:3]} that {pointer} names"
        )
    try:
        return decode(tree, tensors)
    except (StateCodecError, TypeError, ValueError) as exc:
        raise TrainingStateError(f"{pointer}: malformed state ({exc})") from None


def remove_training_state(run_folder: str | Path) -> None:
    """Delete the state of ``run_folder`` (pointer first, so no half-state is ever current)."""
    folder = state_folder(run_folder)
    if not folder.is_dir():
        return
    (folder / STATE_FILE).unlink(missing_ok=True)
    fsync_dir(folder)
    for path in folder.iterdir():
        if path.is_file():
            path.unlink()
    folder.rmdir()


__all__ = [
    "NonFiniteStateError",
    "STATE_DIR",
    "TrainingStateError",
    "has_training_state",
    "load_training_state",
    "remove_training_state",
    "save_training_state",
    "state_folder",
]
