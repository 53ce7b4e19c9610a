"""``ades run --config FILE`` and ``--print-config``: a run config as a TOML or JSON file.

A config file holds any part of a run config, nested as ``config.json`` is
(``[optim]`` / ``"optim": {...}`` sections, top-level keys for ``defense``,
``seed``, ...). ``ades run`` resolves defaults <- ``--preset`` <- the file
<- explicit options, so the file overrides a preset and an option overrides
the file. ``--print-config`` writes the resolved config as TOML; read back
with ``--config`` it builds the same config. TOML has no null: unset fields
(``None``) are left out, which is the same thing, as every field that may be
unset defaults to unset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ades_core.errors import AdesError

CONFIG_SUFFIXES = (".toml", ".json")


class ConfigFileError(AdesError, ValueError):
    """A config file that cannot be read; one line."""


def read_config_file(path: Path) -> dict[str, Any]:
    """The nested mapping in the TOML or JSON file ``path`` (by its suffix).

    Raises:
        ConfigFileError: missing, unreadable, not TOML/JSON, or not a mapping at the top.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigFileError(f"--config {path}: expected a .toml or .json file, got {suffix or 'no suffix'!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"--config {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        if suffix == ".json":
            values = json.loads(text)
        else:
            values = _toml_loads(text)
    except ValueError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigFileError(f"--config {path}: not valid {suffix[1:].upper()} ({first})") from None
    if not isinstance(values, dict):
        raise ConfigFileError(f"--config {path}: expected a mapping of config sections, got {type(values).__name__}")
    return values


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigFileError("reading TOML needs Python 3.11 or the tomli package; or give a .json file") from None
    return tomllib.loads(text)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes as JSON's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def to_toml(config: dict[str, Any], *, header: str = "") -> str:
    """``config`` (``RunConfig.to_dict()``) as TOML: top-level keys first, then one table per section."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    tables = {k: v for k, v in config.items() if isinstance(v, dict)}
    for key, value in config.items():
        if not isinstance(value, dict) and value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
    return "\n".join(lines) + "\n"


__all__ = ["CONFIG_SUFFIXES", "ConfigFileError", "read_config_file", "to_toml"]
