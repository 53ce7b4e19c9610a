"""Kill a real ``ades`` subprocess while it writes its N-th training state (tests only).

:func:`kill_during_checkpoint_env` returns the environment additions that make
a child Python process load ``tests/kill_hook_site/sitecustomize.py`` (through
``PYTHONPATH``) with the save to kill at; the production code has no hook.
"""

from __future__ import annotations

import os
from pathlib import Path

KILL_HOOK_ENV = "ADES_TEST_KILL_DURING_CHECKPOINT"
KILL_AFTER_ENV = "ADES_TEST_KILL_AFTER_CHECKPOINT"
HOOK_DIR = Path(__file__).resolve().parent / "kill_hook_site"


def _with_hook(name: str, save: int, base: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    paths = [str(HOOK_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env[name] = str(save)
    return env


def kill_during_checkpoint_env(save: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus the hook: SIGKILL during the ``save``-th
    training-state write of the child process (and of each child it starts, such as ``ades study``'s)."""
    return _with_hook(KILL_HOOK_ENV, save, base)


def kill_after_checkpoint_env(save: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` plus the hook: SIGKILL right after the ``save``-th training state is in place."""
    return _with_hook(KILL_AFTER_ENV, save, base)
