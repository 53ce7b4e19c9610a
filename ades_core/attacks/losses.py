"""Per-sample losses an attack maximises: ``loss(logits (B, K), y (B,)) -> (B,)``."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ades_core.registries import ATTACK_LOSSES


@ATTACK_LOSSES.register("ce", description="cross-entropy")
def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


@ATTACK_LOSSES.register("cw", description="CW margin: best other logit minus the true logit")
def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], torch.finfo(logits.dtype).min)
    return others.amax(dim=1) - true
