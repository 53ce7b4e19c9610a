"""``config.json``: which run a folder holds, whether a new run may use it, what a resume may change.

A new run refuses a folder that already holds a run unless told to replace it
(``overwrite``); the check reads the folder and changes nothing, so it runs
before anything is built. A resumed run takes its config from ``config.json``;
only the fields in :data:`RESUMABLE_FIELDS` may change, because they do not
change what is computed (where, how often it is logged or saved, what a NaN
does, where the same data lies). The folder's files are listed in
:mod:`ades_core.engine.runfolder.layout`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ades_core.config import ConfigError, RunConfig, default_scheduler
from ades_core.engine.runfolder.layout import CONFIG_FILE, holds_run
from ades_core.errors import AdesError
from ades_core.registries import DEFENSES

RESUMABLE_FIELDS: tuple[str, ...] = (
    "device",
    "log_every",
    "checkpoint_every",
    "on_nonfinite",
    "data.data_dir",
    "data.download",
)
"""Config fields (dotted paths) that may differ when a run is resumed.

Changing ``device`` continues the run, but not bitwise: another device draws
other random numbers and rounds differently. ``data.data_dir`` may point to
a copy of the same data (the classes and sizes are checked on resume).
"""


class RunFolderError(AdesError, ValueError):
    """The output folder cannot be used as asked; one line."""


class ResumeConflictError(ConfigError, RunFolderError):
    """An explicit value that differs from the config of the run being resumed.

    Attributes (besides ``field`` and ``reason``): ``given`` and ``stored``,
    the two values as in ``config.json``, and ``config_file``, its path.
    """

    def __init__(self, field: str, given: Any, stored: Any, config_file: Path) -> None:
        super().__init__(
            field,
            f"{given!r} conflicts with {stored!r} in {config_file}, the run being resumed; "
            f"on resume only {', '.join(RESUMABLE_FIELDS)} may change",
        )
        self.given, self.stored, self.config_file = given, stored, config_file

    def within(self, section: str) -> ResumeConflictError:
        return type(self)(f"{section}.{self.field}", self.given, self.stored, self.config_file)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            flat |= _flatten(value, path)
        else:
            flat[path] = value
    return flat


def _resolve_scheduler(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` with a ``scheduler.name`` of ``None`` replaced by the defense's default.

    ``None`` means that default, so a config that leaves the scheduler to the
    defense and one that names it (as ``config.json`` does since the builder
    records the resolved name) describe the same run. A defense that is not
    registered (a plugin that is gone) is left as it is.
    """
    defense = flat.get("defense")
    unnamed = "scheduler.name" in flat and flat["scheduler.name"] is None
    if unnamed and isinstance(defense, str) and defense in DEFENSES:
        flat["scheduler.name"] = default_scheduler(defense)
    return flat


def _resolve_norm_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` with each budget left to its norm's default (``None``) made explicit, and a
    missing ``attack.norm`` (a run from before L2) read as ``linf``.

    ``None`` means that default, so a config that leaves them unset and the
    ``config.json`` the builder wrote (:meth:`RunConfig.with_resolved_defaults`),
    or one written before these fields could be unset, describe the same run.
    """
    from ades_core.config import DEFAULT_EVAL_EPS, MMA_DEFAULT_MAX_EPS, default_alpha

    norm = flat.setdefault("attack.norm", "linf")
    if norm not in DEFAULT_EVAL_EPS:
        return flat
    eps = flat.get("budget.eps")
    defaults = {
        "eval.eps": DEFAULT_EVAL_EPS[norm],
        "eval.alpha": default_alpha(norm),
        "defense_options.mma_max_eps": MMA_DEFAULT_MAX_EPS[norm],
        "defense_options.iaat_gamma": 1.9 / 255 if norm == "linf" else None if eps is None else eps * 1.9 / 8,
        "defense_options.iaat_max_eps": 1.0 if norm == "linf" else None if eps is None else 8 * eps,
    }
    for path, value in defaults.items():
        if path in flat and flat[path] is None:
            flat[path] = value
    return flat


def fixed_config(config: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config fields a resumed run must keep, flattened to dotted paths (a flat mapping is
    taken as it is), with the scheduler's name and the norm's defaults resolved
    (:func:`_resolve_scheduler`, :func:`_resolve_norm_defaults`)."""
    raw = config.to_dict() if isinstance(config, RunConfig) else config
    return {
        path: value
        for path, value in _resolve_norm_defaults(_resolve_scheduler(_flatten(raw))).items()
        if path not in RESUMABLE_FIELDS and not path.startswith("resolved.")
    }


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"optim.lr 0.1 -> 0.05"`` for every flattened field that differs."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def read_config_file(out: Path) -> dict[str, Any]:
    """The ``config.json`` of run folder ``out``, without the builder's ``resolved`` part."""
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise RunFolderError(f"{out} holds no run to resume (no {CONFIG_FILE})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise RunFolderError(f"{path} does not hold a run config (a JSON object)")
    raw.pop("resolved", None)
    return raw


def read_run_config(out: Path) -> RunConfig:
    """The validated config of the run in ``out``."""
    raw = read_config_file(out)
    try:
        return RunConfig.from_dict(raw)
    except ConfigError as exc:
        raise RunFolderError(f"{Path(out) / CONFIG_FILE}: {exc}") from None


def check_new_run(out: Path, config: RunConfig, *, overwrite: bool) -> None:
    """Refuse to start ``config`` in ``out`` if it would clobber another run. Reads only.

    Raises:
        RunFolderError: ``out`` is a file, or holds a run and ``overwrite`` is off;
            the message says whether it is this run (resume it) or another.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"the run folder {out} is a file; choose a folder for --out")
    if overwrite or not holds_run(out):
        return
    try:
        existing = read_config_file(out)
    except RunFolderError:
        raise RunFolderError(
            f"{out} already holds a run (without a readable {CONFIG_FILE}); "
            "choose another --out, or pass --overwrite to replace it"
        ) from None
    old, new = fixed_config(existing), fixed_config(config)
    if old == new:
        raise RunFolderError(
            f"{out} already holds this run (same config); pass --resume {out} to continue it, "
            "or --overwrite to start it again"
        )
    changed = [
        f"{k} {old.get(k)!r} != {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    ]
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    raise RunFolderError(
        f"{out} already holds a different run ({shown}); choose another --out, "
        "or pass --overwrite to replace it"
    )


def resume_config(out: Path, overrides: Mapping[str, Any]) -> RunConfig:
    """The config of the run in ``out`` with ``overrides`` (nested, as ``RunConfig.evolve``) applied.

    Raises:
        ResumeConflictError: an override changes a field outside :data:`RESUMABLE_FIELDS`.
        RunFolderError: no readable run in ``out``.
    """
    stored = read_run_config(out)
    before = _resolve_norm_defaults(_resolve_scheduler(_flatten(stored.to_dict())))
    try:
        wanted = stored.evolve(**overrides)
    except ConfigError:  # the config's rules refuse the change; a change --resume refuses is said first
        for path, value in sorted(_flatten(overrides).items()):
            value = list(value) if isinstance(value, tuple) else value
            if path not in RESUMABLE_FIELDS and value != before.get(path):
                raise ResumeConflictError(path, value, before.get(path), Path(out) / CONFIG_FILE) from None
        raise
    after = _resolve_norm_defaults(_resolve_scheduler(_flatten(wanted.to_dict())))
    for path in sorted(after):
        if after[path] != before.get(path) and path not in RESUMABLE_FIELDS:
            raise ResumeConflictError(path, after[path], before.get(path), Path(out) / CONFIG_FILE)
    return wanted


DATA_FINGERPRINT = ("num_classes", "classes", "train_size", "val_size", "test_size", "mean", "std")
"""What the builder resolved about the data that a resumed run must find again."""


def check_same_data(out: Path, resolved: Mapping[str, Any]) -> None:
    """Refuse to resume on data that differs from the run's (another folder, other classes).

    Raises:
        RunFolderError: the classes, split sizes or channel statistics in
            ``config.json``'s ``resolved`` differ from ``resolved``.
    """
    path = Path(out) / CONFIG_FILE
    try:
        before = json.loads(path.read_text(encoding="utf-8")).get("resolved", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise RunFolderError(f"{path} is not readable JSON ({exc})") from None
    for key in DATA_FINGERPRINT:
        if key in before and before[key] != resolved.get(key):
            raise RunFolderError(
                f"the data differs from the run being resumed: {key} was {_short(before[key])}, "
                f"now {_short(resolved.get(key))}; point --data-dir at the run's data"
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = [
    "RESUMABLE_FIELDS",
    "ResumeConflictError",
    "RunFolderError",
    "check_new_run",
    "check_same_data",
    "config_differences",
    "fixed_config",
    "read_config_file",
    "read_run_config",
    "resume_config",
]
