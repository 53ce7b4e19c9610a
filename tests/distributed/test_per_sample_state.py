"""Per-sample state (IAAT's budgets, MMA's margins) stays the same on every rank.

Under ``torchrun`` each rank sees different samples of the global batch; an
update written only into the rank's own copy would leave every other rank
with stale entries. ``assign_by_index`` shares each update, so after a step
every rank holds what one process holding the whole global batch would.
The rank's reduction is handed over explicitly (``batch_reduction(ctx)``).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from ades_core.batch_reduction import LOCAL, batch_reduction
from ades_core.distributed import init_from_env, shutdown

pytestmark = pytest.mark.slow

N = 10
RANK_IDX = {0: [0, 3, 5], 1: [5, 7, 9]}  # sample 5 is on both ranks (the sampler's padding)


def _values(rank: int) -> torch.Tensor:
    return torch.tensor(RANK_IDX[rank], dtype=torch.float32) + 100 * (rank + 1)


def _worker(rank: int, port: int, result_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    ctx = init_from_env("cpu")
    try:
        buffer = torch.full((N,), -1.0)
        batch_reduction(ctx).assign(buffer, torch.tensor(RANK_IDX[rank]), _values(rank))
        torch.save(buffer, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_rank_holds_every_ranks_updates(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    expected = torch.full((N,), -1.0)
    expected[[0, 3]] = torch.tensor([100.0, 103.0])
    expected[[7, 9]] = torch.tensor([207.0, 209.0])
    expected[5] = (105.0 + 205.0) / 2  # held by both ranks: the mean
    assert torch.equal(rank0, expected)
    assert torch.equal(rank1, expected)


def test_one_process_assigns_directly():
    buffer = torch.zeros(4)
    LOCAL.assign(buffer, torch.tensor([2, 0]), torch.tensor([5.0, 7.0], dtype=torch.float64))
    assert buffer.tolist() == [7.0, 0.0, 5.0, 0.0] and buffer.dtype == torch.float32
