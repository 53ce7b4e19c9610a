"""Batch-wise min-max normalisation of raw cues."""

from __future__ import annotations

import torch
from torch import Tensor

from ades_core.batch_reduction import LOCAL, BatchReduction

CONSTANT_CUE_VALUE = 0.5
"""The normalised value of a cue that is constant over the batch (no information)."""


def minmax_normalize(raw: Tensor, *, reduction: BatchReduction = LOCAL, tiny: float = 1e-12) -> Tensor:
    """Min-max normalise each column of ``raw`` over the batch to ``[0, 1]``.

    The column minima and maxima are ``reduction``'s: the batch given
    (:data:`~ades_core.batch_reduction.LOCAL`), or under ``torchrun`` the
    global batch (a :class:`~ades_core.batch_reduction.RankReduction`
    all-reduces them), so N ranks with B/N samples each normalise exactly as
    one rank with B samples.

    Args:
        raw: ``(B,)`` or ``(B, k)`` finite cue values.
        reduction: the batch's reduction (:mod:`ades_core.batch_reduction`).
        tiny: a column whose range (max - min) is at most this is treated as
            constant and maps to :data:`CONSTANT_CUE_VALUE` (0.5) everywhere,
            so a constant cue never produces NaN and carries no preference.

    Returns:
        a float32 tensor of ``raw``'s shape with values in ``[0, 1]``.
    """
    values = raw.float()
    low = reduction.min(values)
    high = reduction.max(values)
    span = high - low
    constant = span <= tiny
    scaled = (values - low) / torch.where(constant, torch.ones_like(span), span)
    scaled = torch.where(constant, torch.full_like(scaled, CONSTANT_CUE_VALUE), scaled)
    return scaled.clamp_(0.0, 1.0)
