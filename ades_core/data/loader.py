"""Batches cut from a split held on the training device.

CIFAR-sized splits fit in device memory as uint8 (50,000 x 3 x 32 x 32 is
150 MB), so :class:`DeviceLoader` moves a split to the device once and then
shuffles, slices, converts and augments on the device: no worker processes,
no host-to-device copy per batch, no host-device synchronisation per batch.

Sharded across ``world_size`` ranks (``torchrun``), every rank draws the same
permutation of the whole split, cuts it into the same *global* batches of
``batch_size * world_size`` samples, and takes its own contiguous slice of
each: the union of the ranks' batch ``b`` is the single-process batch ``b``.
A last global batch smaller than that is dropped, so every rank runs the same
number of steps. Each rank draws its own augmentation (same distribution,
other draws than a single process).

Order and augmentation are functions of ``(seed, epoch)`` alone: call
:meth:`DeviceLoader.set_epoch` at the start of each epoch (as with
``DistributedSampler``), and a run resumed at epoch ``e`` sees exactly the
batches the uninterrupted run saw.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ades_core.data.augment import random_crop_flip
from ades_core.data.datasets import DataError, ImageTensors

__all__ = ["DeviceLoader"]

_ORDER_STREAM = 0
_AUGMENT_STREAM = 1


def _derived_seed(seed: int, epoch: int, stream: int | tuple[int, ...]) -> int:
    """A 64-bit seed that depends on ``(seed, epoch, stream)`` only, well mixed."""
    words = [seed & 0xFFFFFFFFFFFFFFFF, epoch, *(stream if isinstance(stream, tuple) else (stream,))]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])


class DeviceLoader:
    """Iterate over ``(x, y, idx)`` batches of a split kept on ``device``.

    Args:
        data: the split; its uint8 images and labels are copied to ``device`` once, here.
        batch_size: samples per batch (> 0).
        device: where batches live (``"cuda"``, ``"cpu"``, a ``torch.device``).
        shuffle: a fresh permutation each epoch (from ``(seed, epoch)``); otherwise
            the stored order.
        augment: apply :func:`~ades_core.data.augment.random_crop_flip` (padding 4)
            to each batch.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        seed: the seed of order and augmentation; non-negative.
        rank, world_size: this rank's slice of every global batch of
            ``batch_size * world_size`` samples (``batch_size`` is per rank);
            with ``world_size`` > 1 an incomplete last global batch is dropped.

    Each batch is ``x`` float32 ``(B, C, H, W)`` in ``[0, 1]`` pixel scale, ``y``
    int64 ``(B,)`` labels and ``idx`` int64 ``(B,)`` positions of the samples in
    ``data``, all on ``device``.
    """

    def __init__(
        self,
        data: ImageTensors,
        *,
        batch_size: int,
        device: torch.device | str,
        shuffle: bool,
        augment: bool,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(data, ImageTensors):
            raise DataError(f"data must be ImageTensors, got {type(data).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.epoch = 0
        self.classes = data.classes
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)

    @property
    def num_samples(self) -> int:
        """Samples in the split (not all of them are yielded under ``drop_last``)."""
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use the order and augmentation of ``epoch`` (>= 0)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise DataError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.world_size > 1:
            return self.num_samples // (self.batch_size * self.world_size)
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def _order(self) -> Tensor:
        n = self.num_samples
        if not self.shuffle:
            return torch.arange(n, device=self.device)
        seed = _derived_seed(self.seed, self.epoch, _ORDER_STREAM)
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(n, generator=generator).to(self.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = self._order()
        augment_generator = None
        if self.augment:
            augment_generator = torch.Generator(device=self.device)
            stream = _AUGMENT_STREAM if self.rank == 0 else (_AUGMENT_STREAM, self.rank)
            augment_generator.manual_seed(_derived_seed(self.seed, self.epoch, stream))
        step = self.batch_size * self.world_size
        for b in range(len(self)):
            first = b * step + self.rank * self.batch_size
            idx = order[first : first + self.batch_size]
            x = self.images.index_select(0, idx).float().div_(255)
            if augment_generator is not None:
                x = random_crop_flip(x, generator=augment_generator)
            yield x, self.labels.index_select(0, idx), idx

    def __repr__(self) -> str:
        return (
            f"DeviceLoader(samples={self.num_samples}, batch_size={self.batch_size}, "
            f"device={self.device}, shuffle={self.shuffle}, augment={self.augment}, "
            f"drop_last={self.drop_last}, seed={self.seed}, epoch={self.epoch}"
            + (f", rank={self.rank}, world_size={self.world_size})" if self.world_size > 1 else ")")
        )
