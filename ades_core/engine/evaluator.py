"""Held-out accuracy, clean and under attack, without touching the model."""

from __future__ import annotations

import time

import attrs
import numpy as np
import torch
from torch import nn

from ades_core.data import DeviceLoader, ImageTensors
from ades_core.distributed import DistributedContext, shard_bounds
from ades_core.engine.placement import check_model_device
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.protocols import BudgetedAttack
from ades_core.scoring import strictly_correct


@attrs.frozen
class AccuracyReport:
    """Accuracies in [0, 1] on ``n`` samples at budget ``eps`` ([0, 1] pixel scale).

    ``robust_acc`` counts a sample as robust only when it is classified
    correctly both clean and after the attack (a misclassified clean input is
    never counted robust, even if the attack's random start lands on the right
    class).
    """

    n: int
    clean_acc: float
    robust_acc: float
    eps: float
    seconds: float


def evaluate_robustness(
    model: nn.Module,
    data: ImageTensors,
    attack: BudgetedAttack,
    eps: float,
    *,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    seed: int = 0,
    distributed: DistributedContext | None = None,
) -> AccuracyReport:
    """Clean and attacked accuracy of ``model`` on ``data`` (deterministic for ``seed``).

    The model is evaluated in eval mode (no BN statistic updates) and every
    submodule's mode is restored afterwards; its parameters are not changed.
    Counts stay on the device and are read once at the end.

    Torch's generators are seeded afresh for every batch, from ``seed`` and
    the batch's first index, so a batch's random start does not depend on
    the batches before it. With ``distributed``, each rank evaluates its
    contiguous share of whole batches
    (:func:`~ades_core.distributed.shard_bounds` aligned to ``batch_size``)
    and the counts are summed over ranks: every rank returns the report of
    the whole split, equal to the single-process one.
    """
    check_model_device(model, device)
    start = time.perf_counter()
    n = len(data)
    first, stop = (0, n) if distributed is None else shard_bounds(
        n, distributed.rank, distributed.world_size, align=batch_size
    )
    if (first, stop) != (0, n):
        data = ImageTensors(data.images[first:stop], data.labels[first:stop], data.classes)
    loader = DeviceLoader(data, batch_size=batch_size, device=device, shuffle=False, augment=False)
    clean_correct = torch.zeros((), dtype=torch.long, device=device)
    robust_correct = torch.zeros((), dtype=torch.long, device=device)
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        with eval_mode(model):
            for b, (x, y, _) in enumerate(loader):
                torch.manual_seed(_batch_seed(seed, first + b * batch_size))
                with torch.no_grad(), autocast_for(x, autocast_dtype):
                    clean_ok = strictly_correct(model(x), y)
                x_adv = attack(model, x, y, eps)
                with torch.no_grad(), autocast_for(x, autocast_dtype):
                    adv_ok = strictly_correct(model(x_adv), y)
                clean_correct += clean_ok.sum()
                robust_correct += (clean_ok & adv_ok).sum()
    counts = torch.stack([clean_correct, robust_correct])
    if distributed is not None:
        counts = distributed.all_reduce(counts, "sum")
    clean, robust = counts.tolist()
    return AccuracyReport(
        n=n,
        clean_acc=clean / max(n, 1),
        robust_acc=robust / max(n, 1),
        eps=float(eps),
        seconds=time.perf_counter() - start,
    )


def _batch_seed(seed: int, first_index: int) -> int:
    """The torch seed of the evaluation batch starting at ``first_index``: mixed from both."""
    return int(np.random.SeedSequence([seed, first_index]).generate_state(1, dtype=np.uint64)[0])
