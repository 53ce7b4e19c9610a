"""The envelope-theorem path from the budgets to the training loss, through which a scheduler learns."""

from __future__ import annotations

import torch
from torch import Tensor

from ades_core.norms import NORMS


def envelope_input(x: Tensor, x_adv: Tensor, eps: Tensor, *, norm: str = "linf") -> Tensor:
    """``x_adv`` with a gradient path to ``eps`` as the envelope theorem gives it.

    The value is ``x_adv`` exactly. Its derivative w.r.t. ``eps_i`` is how the
    attack's maximiser moves as the ball grows, with the pixels the [0, 1] box
    holds (at a bound, pushed beyond it) fixed
    (:meth:`~ades_core.norms.ThreatNorm.envelope_direction`). Backpropagating
    a loss through it gives ``dL_i/d eps_i = <grad_x L_i(x_adv), d x_adv / d eps_i>``,
    at an exact maximiser the Lagrange multiplier of the budget constraint,
    i.e. the envelope-theorem derivative ``dL(f(x + delta*))/d eps``:

    * ``linf``: the direction is ``(x_adv - x) / eps_i`` on the free pixels;
      pixels inside the ball have zero gradient at the maximiser, so this is
      ``sum_j |dL_i/dx_j|`` over the pixels where ``|delta_ij| = eps_i``: the
      L1 (dual) norm of the gradient on the active pixels;
    * ``l2``: the direction is ``delta_F * eps_i / (eps_i^2 - ||delta_H||^2)``
      on the free pixels ``F`` (``H``: held), and the derivative is
      ``eps_i * ||g_F||_2 / ||delta_F||_2``: the L2 (dual) norm of the input
      gradient on the free pixels, exactly ``||g||_2`` when the box holds
      nothing (derived in :meth:`~ades_core.norms.L2Norm.envelope_direction`).

    When a truncated PGD stops short of the boundary, the scaled direction
    still carries the signal, where a strict active-set rule would give zero.
    A zero budget has no active constraint: its derivative is 0.

    Args:
        x, x_adv: ``(B, C, H, W)``; ``eps``: ``(B,)`` carrying the scheduler's graph.
        norm: the attack's norm, ``linf`` or ``l2``.
    """
    view = (-1,) + (1,) * (x.ndim - 1)
    delta = (x_adv - x).detach()
    radius = eps.detach().view(view)
    held_by_box = ((x_adv <= 0) & (delta < 0)) | ((x_adv >= 1) & (delta > 0))
    positive = radius > 0
    direction = NORMS.get(norm).envelope_direction(
        delta.float(), held_by_box, torch.where(positive, radius, torch.ones_like(radius)).float()
    )
    direction = torch.where(positive, direction, torch.zeros_like(direction)).to(delta.dtype)
    return x_adv.detach() + (eps - eps.detach()).view(view) * direction
