"""Under torchrun the scheduler objectives reduce over the global batch, as one process does.

Two gloo ranks each hold half of one batch; the RMS normalisation, the
median loss level (rho), the penalty's mean budget and the ``target`` fit's
target mean must come out as a single process computes them on the whole
batch (they used to be each rank's own). Each rank hands its components the
reduction of its context explicitly (``batch_reduction(ctx)``), as the builder does.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from ades_core import distributed
from ades_core.batch_reduction import LOCAL, BatchReduction, batch_reduction
from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.registries import SCHEDULER_OBJECTIVES
from ades_core.schedulers.objectives import _loss_level, rms_normalised
from ades_core.schedulers.target import RobustnessTargetFit

BATCH = 16
EPS_MIN, LAM = 4 / 255, 8 / 255


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "values": torch.randn(BATCH, generator=generator),
        "loss": torch.rand(BATCH, generator=generator) * 3,
        "eps": EPS_MIN + LAM * torch.rand(BATCH, generator=generator),
        "grad": torch.rand(BATCH, generator=generator),
        "target": torch.rand(BATCH, generator=generator),
        "held_out": torch.arange(BATCH) % 5 == 0,
        "sigma": torch.rand(BATCH, generator=generator),
    }


def _figures(part: dict[str, torch.Tensor], reduction: BatchReduction = LOCAL) -> dict[str, torch.Tensor]:
    penalty = SCHEDULER_OBJECTIVES.build(
        "penalty", SchedulerOptions(objective="penalty"), budget=BudgetConfig(), reduction=reduction
    )
    fit = RobustnessTargetFit(EPS_MIN, LAM, reduction=reduction)
    _, target_deviation = fit.deviations(part["sigma"], part["target"], part["held_out"])
    return {
        "rms": rms_normalised(part["values"], reduction),
        "rho": _loss_level(part["loss"], None, reduction).reshape(1),
        "penalty": penalty.eps_grad(part["grad"], part["eps"], part["loss"]),
        "target_deviation": target_deviation,
    }


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    ctx = distributed.init_from_env("cpu")
    try:
        half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
        figures = _figures({k: v[half] for k, v in _batch().items()}, batch_reduction(ctx))
        torch.save(figures, f"{out}/rank{rank}.pt")
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_reduce_the_objectives_figures_over_the_global_batch(tmp_path):
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    whole = _figures(_batch())
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name in ("rms", "penalty", "target_deviation"):
        torch.testing.assert_close(torch.cat([ranks[0][name], ranks[1][name]]), whole[name])
    for r in (0, 1):
        torch.testing.assert_close(ranks[r]["rho"], whole["rho"])
