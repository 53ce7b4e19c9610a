"""Per-sample cues and their batch-wise normalisation.

Importing this package registers the built-in cues ``grad``, ``entropy`` and
``mcdropout``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ades_core.cues import entropy, grad, mcdropout  # noqa: F401  (registration)
from ades_core.cues.normalize import minmax_normalize
from ades_core.protocols import CueContext, CueExtractor, Cues


def extract_cues(extractors: Sequence[CueExtractor], ctx: CueContext) -> Cues:
    """Run each extractor on ``ctx`` and min-max normalise each cue over the batch
    (``ctx.reduction``'s: the global batch under ``torchrun``).

    Returns:
        :class:`Cues` with ``values`` ``(B, k)`` in [0, 1], detached, carrying ``ctx.reduction``.
    """
    if not extractors:
        return Cues.empty(ctx.x.shape[0], ctx.x.device, reduction=ctx.reduction)
    raw = torch.stack([extractor(ctx).detach().float() for extractor in extractors], dim=1)
    names = tuple(e.name for e in extractors)
    return Cues(minmax_normalize(raw, reduction=ctx.reduction), names, reduction=ctx.reduction)


__all__ = ["extract_cues", "minmax_normalize"]
