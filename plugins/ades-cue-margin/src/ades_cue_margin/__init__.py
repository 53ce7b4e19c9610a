"""The ``margin`` cue for ades, shipped as a plugin through the ``ades.cues`` entry point.

``m(x) = z_y - max_{j != y} z_j``: the clean logit of the true class minus the
best other logit, per sample ``(B,)``, in logit units. Positive means correctly
classified with that much room; negative means misclassified. It reuses the
clean logits that the ``grad`` and ``entropy`` cues already computed (one shared
forward pass per batch, see ``ades_core.protocols.CueContext``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__version__ = "0.1.0"


def logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``(B, K)`` logits and ``(B,)`` labels -> ``(B,)`` true-class logit minus best other logit."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], torch.finfo(logits.dtype).min)
    return true - others.amax(dim=1)


class LogitMargin:
    """Logit margin ``z_y - max_{j != y} z_j`` on the clean inputs (eval mode), ``(B,)``."""

    name = "margin"

    def __call__(self, ctx) -> Tensor:
        return logit_margin(ctx.logits, ctx.y)


def margin_cue(options) -> LogitMargin:
    """Logit margin between the true class and the best other class."""
    return LogitMargin()
