"""Evaluation across ``torchrun`` ranks: contiguous shards of whole batches, per-sample results merged.

Under ``torchrun`` every rank holds the whole evaluation split; each pass over
it (the clean predictions, each attack run) is cut into whole batches of
``batch_size`` and every rank takes a contiguous run of them
(:func:`~ades_core.distributed.shard_bounds` aligned to ``batch_size``). The
per-sample results, bool ``(N,)``, are then merged over ranks
(:func:`merge_flags`), so every rank holds those of the whole split in the
global sample order and computes the same rows, worst case and checks.

Why N ranks give exactly the single-process result on the CPU: the batches a
rank evaluates are batches of the single-process run (same samples, same
order, same size), and each batch's random generator is seeded by
:func:`batch_seed` from the evaluation seed and the *global* index of the
batch's first sample, never from the rank or from the batches before it. PGD's
random start and the seed AutoAttack and Square draw for their components
therefore come out the same however the batches are spread over processes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ades_core.distributed import DistributedContext, shard_bounds


def shard_range(n: int, batch_size: int, distributed: DistributedContext | None) -> tuple[int, int]:
    """``[start, stop)`` of the ``n`` items this rank evaluates: all of them alone, else whole batches."""
    if distributed is None:
        return 0, n
    return shard_bounds(n, distributed.rank, distributed.world_size, align=batch_size)


def merge_flags(flags: Tensor, distributed: DistributedContext | None) -> Tensor:
    """The per-sample results of all ranks, bool ``(N,)`` on the CPU.

    ``flags`` is bool ``(N,)`` on the CPU, ``True`` only at samples this rank
    evaluated and found correct (``False`` everywhere outside its shard). The
    shards are disjoint, so the element-wise maximum over ranks (one
    ``all_reduce`` of ``N`` bytes on the rank's device) is each sample's own
    result. Every rank must call it (a collective); alone it returns ``flags``.
    """
    if distributed is None:
        return flags
    merged = distributed.all_reduce(flags.to(device=distributed.device, dtype=torch.uint8), "max")
    return merged.cpu().bool()


def batch_seed(seed: int, first_index: int) -> int:
    """The torch seed of the batch whose first sample has global index ``first_index``, mixed with ``seed``."""
    return int(np.random.SeedSequence([seed, first_index]).generate_state(1, dtype=np.uint64)[0])
