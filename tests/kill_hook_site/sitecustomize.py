"""A test-only hook, loaded by Python at start-up from ``PYTHONPATH`` (:mod:`tests.kill_hook` sets it).

``ADES_TEST_KILL_DURING_CHECKPOINT=N``: the process SIGKILLs itself while
writing its N-th training state: after the new tensor file is in place and
with ``state.json``'s temporary file half written, i.e. before the rename that
would make the new state current.

``ADES_TEST_KILL_AFTER_CHECKPOINT=N``: the process SIGKILLs itself right after
its N-th training state is in place, i.e. at a known step in the middle of
training (what a kill anywhere in the next step leaves behind).

It wraps ``ades_core.engine.runfolder.state_files.atomic_write``; production code
knows nothing of it.
"""

from __future__ import annotations

import os

_DURING, _AFTER = "ADES_TEST_KILL_DURING_CHECKPOINT", "ADES_TEST_KILL_AFTER_CHECKPOINT"

if os.environ.get(_DURING) or os.environ.get(_AFTER):
    import signal
    from pathlib import Path

    from ades_core.engine.runfolder import state_files as training_state

    _during = int(os.environ.get(_DURING) or 0)
    _after = int(os.environ.get(_AFTER) or 0)
    _original = training_state.atomic_write
    _saves = 0

    def _atomic_write(path, write):
        global _saves
        if Path(path).name != training_state.STATE_FILE:
            return _original(path, write)
        _saves += 1
        if _saves == _during:

            def write_half_and_die(tmp: Path) -> None:
                write(tmp)
                text = tmp.read_text()
                tmp.write_text(text[: len(text) // 2])
                os.kill(os.getpid(), signal.SIGKILL)

            return _original(path, write_half_and_die)
        result = _original(path, write)
        if _saves == _after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    training_state.atomic_write = _atomic_write
