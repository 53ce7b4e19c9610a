"""A validation split held out of the loaded training images.

:func:`hold_out` draws ``n`` positions of the training split from the seed
alone (its own stream, independent of the training subset's draw and of the
loader's order), so every run with the same seed and the same loaded images
holds out the same images. The two parts are disjoint and together are the
whole split; both keep the split's order. The validation part is evaluated
with :func:`~ades_core.engine.evaluator.evaluate_robustness`, which never
augments.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
from torch import Tensor

from ades_core.data.datasets import DataError, ImageTensors

VALIDATION_STREAM = 0x5641_4C
"""Mixed into the seed of the validation draw ("VAL"), so it is not the subset draw's permutation."""


@attrs.frozen(eq=False)
class HeldOut:
    """The training split cut in two.

    Attributes:
        train, val: the parts trained on and held out.
        train_index, val_index: sorted int64 positions ``(N_train,)`` and
            ``(N_val,)`` of each part in the split that was cut.
    """

    train: ImageTensors
    val: ImageTensors
    train_index: Tensor
    val_index: Tensor


def validation_indices(size: int, n: int, seed: int) -> Tensor:
    """Sorted int64 positions ``(n,)`` of the held-out images among ``size``; a function of the arguments alone.

    Raises:
        DataError: ``n`` is not in ``[1, size - 1]`` (no image would be left to train on).
    """
    if not 0 < n < size:
        raise DataError(
            f"--val-split {n} must leave training images: the loaded training split holds {size}; "
            f"give a number in [1, {size - 1}] (or raise --train-subset)"
        )
    mixed = int(np.random.SeedSequence([seed, VALIDATION_STREAM]).generate_state(1, dtype=np.uint64)[0])
    generator = torch.Generator().manual_seed(mixed)
    return torch.randperm(size, generator=generator)[:n].sort().values


def hold_out(split: ImageTensors, n: int, seed: int) -> HeldOut:
    """``split`` cut into ``n`` held-out images (:func:`validation_indices`) and the rest."""
    val_index = validation_indices(len(split), n, seed)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[val_index] = False
    train_index = keep.nonzero().squeeze(1)

    def part(index: Tensor) -> ImageTensors:
        return ImageTensors(split.images[index], split.labels[index], split.classes)

    return HeldOut(train=part(train_index), val=part(val_index), train_index=train_index, val_index=val_index)


__all__ = ["HeldOut", "VALIDATION_STREAM", "hold_out", "validation_indices"]
