"""The allocation controls: the learned budgets reversed, or handed out in a random order.

Both keep what the scheduler learns and change only which sample gets which
budget, so a run with a control measures what the allocation itself is worth
(``--scheduler-reverse``, ``--scheduler-shuffle``).
"""

from __future__ import annotations

import attrs
import torch

from ades_core.batch_reduction import LOCAL, BatchReduction
from ades_core.protocols import Budget


def reverse_allocation(budget: Budget, reduction: BatchReduction = LOCAL) -> Budget:
    """The reversed control: each budget's deviation from the batch mean negated, same mean.

    ``eps_i' = 2 mean(eps) - eps_i``, clamped into ``[eps_min, eps_max]``
    (``sigma`` likewise). With the ``mean`` allocation the batch mean is
    ``eps_min + lam / 2``, so ``eps_i' = eps_min + eps_max - eps_i`` lies in the
    range without the clamp (``sigma_i' = 1 - sigma_i``, tested). The mean is
    ``reduction``'s (:mod:`ades_core.batch_reduction`): over the global batch
    under ``torchrun``.

    Only the values are reversed: the gradient reaches each sample's learned
    budget unchanged (``d eps_i'/d eps_i`` is taken as 1), so an objective
    trains the scheduler exactly as in the learned arm, from the signal
    measured at the budgets actually used, and the attack keeps using the
    reversed allocation of whatever the scheduler learns.
    """
    eps = budget.eps
    flipped = (2 * reduction.mean(eps.detach()) - eps.detach()).clamp(budget.eps_min, budget.eps_max)
    sigma = budget.sigma
    if sigma is not None:
        flipped_sigma = (2 * reduction.mean(sigma.detach()) - sigma.detach()).clamp(0.0, 1.0)
        sigma = flipped_sigma + (sigma - sigma.detach())
    return attrs.evolve(budget, eps=flipped + (eps - eps.detach()), sigma=sigma)


def shuffle_allocation(budget: Budget) -> Budget:
    """The shuffled control: the batch's learned budgets handed out in a random order.

    ``eps_i' = eps_{pi(i)}`` for a uniformly random permutation ``pi`` of the
    (local) batch, drawn from the global torch generator: the same budgets,
    so the same mean and spread (exactly), with the assignment to samples
    made at random instead of by the cues. Like :func:`reverse_allocation`,
    only the values move: the gradient reaches each sample's own learned
    budget, so the scheduler learns as in the learned arm.
    """
    order = torch.randperm(budget.eps.shape[0], device=budget.eps.device)
    eps = budget.eps
    shuffled = eps.detach()[order] + (eps - eps.detach())
    sigma = budget.sigma
    if sigma is not None:
        sigma = sigma.detach()[order] + (sigma - sigma.detach())
    return attrs.evolve(budget, eps=shuffled, sigma=sigma)
