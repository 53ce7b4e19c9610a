"""The ``entropy`` cue: entropy of the softmax prediction."""

from __future__ import annotations

import torch
from torch import Tensor

from ades_core.config import CueOptions
from ades_core.protocols import CueContext
from ades_core.registries import CUES


def softmax_entropy(logits: Tensor) -> Tensor:
    """``H(p) = -sum_k p_k log p_k`` in nats for ``(B, K)`` logits, ``(B,)``; finite for any logits."""
    log_p = torch.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


class SoftmaxEntropy:
    """Entropy (nats, in ``[0, log K]``) of the clean softmax prediction, eval mode."""

    name = "entropy"

    def __call__(self, ctx: CueContext) -> Tensor:
        return softmax_entropy(ctx.logits)


@CUES.register("entropy", description="entropy of the softmax prediction (nats)")
def entropy_cue(options: CueOptions) -> SoftmaxEntropy:
    return SoftmaxEntropy()
