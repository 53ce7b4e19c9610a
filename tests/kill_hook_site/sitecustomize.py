"""A test-only hook, loaded by Python at start-up from ``PYTHONPATH`` (:mod:`tests.kill_hook` sets it).

With ``ADES_TEST_KILL_DURING_CHECKPOINT=N`` in the environment, the process
SIGKILLs itself while writing its N-th training state: after the new tensor
file is in place and with ``state.json``'s temporary file half written, i.e.
before the rename that would make the new state current. It wraps
``ades_core.engine.training_state.atomic_write``; production code knows
nothing of it.
"""

from __future__ import annotations

import os

_ENV = "ADES_TEST_KILL_DURING_CHECKPOINT"

if os.environ.get(_ENV):
    import signal
    from pathlib import Path

    from ades_core.engine import training_state

    _kill_at = int(os.environ[_ENV])
    _original = training_state.atomic_write
    _saves = 0

    def _atomic_write(path, write):
        global _saves
        if Path(path).name != training_state.STATE_FILE:
            return _original(path, write)
        _saves += 1
        if _saves != _kill_at:
            return _original(path, write)

        def write_half_and_die(tmp: Path) -> None:
            write(tmp)
            text = tmp.read_text()
            tmp.write_text(text[: len(text) // 2])
            os.kill(os.getpid(), signal.SIGKILL)

        return _original(path, write_half_and_die)

    training_state.atomic_write = _atomic_write
