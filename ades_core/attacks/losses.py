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


def kl_to_target(logits: Tensor, target_probs: Tensor) -> Tensor:
    """``KL(target_probs || softmax(logits))`` per sample, ``(B,)``: TRADES's inner loss.

    The attack maximises it to move the prediction on ``x'`` away from the
    prediction on the clean ``x`` (Zhang et al., ICML 2019, Eq. 5). Its second
    argument is a distribution, not labels: ``target_probs`` ``(B, K)``, rows
    summing to 1, detached (the clean softmax). Zero-probability classes
    contribute 0. Not in ``ATTACK_LOSSES``, whose losses take labels.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    return F.kl_div(log_probs, target_probs.float(), reduction="none").sum(dim=1)
