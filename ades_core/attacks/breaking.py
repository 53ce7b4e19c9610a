"""The radius at which a training attack first broke each sample, read from its own iterates.

PGD computes the logits of every iterate it takes a gradient at; whether the
model misclassified that iterate is therefore free. :class:`BreakingRadius`
watches the iterates in order and keeps, per sample, the distance in the
attack's norm (``||x_k - x||_inf`` or ``||x_k - x||_2``, pixel space) of the *first* iterate ``x_k`` the model
misclassified: a per-sample bound on how far the sample's decision boundary
is, at no extra forward pass. A sample is robust at an iterate when
``z_y > max_{j != y} z_j`` (a tie counts as broken, as in
:func:`~ades_core.attacks.pgd.keep_most_misclassified`); a NaN logit never
counts as broken.

The recorder only queues device ops (no host-device synchronisation). Who
shows it which iterates: :class:`~ades_core.attacks.pgd.PGD` (``breaking=``)
shows every iterate it forwards (the start and the steps before the last);
a caller that computed the start's logits itself (shared cues) and the
training forward of the last iterate show those (see
:class:`~ades_core.defenses.budgeted.BudgetedAdversarialTraining`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ades_core.attacks.losses import cw_margin
from ades_core.norms import NORMS


class BreakingRadius:
    """Per sample, the distance (in the attack's norm) of the first iterate the model misclassified.

    Args:
        x: the clean batch ``(B, C, H, W)`` in [0, 1].
        y: labels ``(B,)`` int64 (the true classes, whatever the attack maximises).
        norm: ``linf`` or ``l2``: the norm the distance is measured in (the attack's).

    Attributes:
        radius: ``(B,)`` float32: ``||x_k - x||`` of the first misclassified
            iterate shown so far, ``inf`` for a sample not broken yet.
    """

    def __init__(self, x: Tensor, y: Tensor, *, norm: str = "linf") -> None:
        if y.shape != x.shape[:1]:
            raise ValueError(
                f"BreakingRadius needs labels y of shape ({x.shape[0]},), got {tuple(y.shape)}"
            )
        self.x = x.detach().float()
        self.y = y.detach()
        self.norm = NORMS.get(norm)
        self.radius = torch.full((x.shape[0],), torch.inf, device=x.device)

    def observe(self, x_iter: Tensor, logits: Tensor) -> None:
        """Show the next iterate ``x_iter`` ``(B, C, H, W)`` and its logits ``(B, K)``; device ops only."""
        broken = cw_margin(logits.detach(), self.y) >= 0
        distance = self.norm.distance(x_iter.detach().float() - self.x)
        first = broken & torch.isinf(self.radius)
        self.radius = torch.where(first, distance, self.radius)

    @property
    def broken(self) -> Tensor:
        """``(B,)`` bool: broken by some iterate shown so far."""
        return torch.isfinite(self.radius)
