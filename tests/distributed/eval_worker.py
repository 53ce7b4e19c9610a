"""A ``ades eval`` rank whose attack fails or stops on request, for the multi-rank failure and resume tests.

Run on every rank (started by torchrun or directly with RANK/WORLD_SIZE set):
``python eval_worker.py RUN OUT [ades eval options]``. The attack is PGD-2,
registered as ``test-worker-attack``; environment variables change it:

* ``ADES_TEST_FAIL_RANK=R``: rank R raises a user error (:class:`~ades_core.errors.InputError`) at its first batch;
* ``ADES_TEST_STOP_AT=K``: every rank raises ``KeyboardInterrupt`` at its batch K (0-based), as
  Ctrl-C would;
* ``ADES_TEST_CALLS=DIR``: each rank writes how many batches it attacked to ``DIR/rank<R>``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ades_cli.main import cli
from ades_core.errors import InputError
from ades_core.evaluation import resolve_attack
from ades_core.registries import ATTACKS

ATTACK = "test-worker-attack"
CALLS = {"n": 0}


def _record_calls() -> None:
    folder = os.environ.get("ADES_TEST_CALLS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"rank{os.environ.get('RANK', '0')}").write_text(str(CALLS["n"]))


def _make(options, **kwargs):
    pgd = resolve_attack("pgd2").build()

    def attack(model, x, y, eps):
        failing = os.environ.get("ADES_TEST_FAIL_RANK")
        if failing is not None and failing == os.environ.get("RANK"):
            raise InputError(f"rank {os.environ['RANK']} cannot attack this batch")
        if os.environ.get("ADES_TEST_STOP_AT") == str(CALLS["n"]):
            _record_calls()
            raise KeyboardInterrupt
        CALLS["n"] += 1
        _record_calls()
        return pgd(model, x, y, eps)

    return attack


if __name__ == "__main__":
    torch.set_num_threads(1)
    ATTACKS.register(ATTACK, _make)
    run_dir, out, *options = sys.argv[1:]
    cli.main(["eval", run_dir, "--attack", ATTACK, "--out", out, *options], prog_name="ades")
