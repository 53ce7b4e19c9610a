"""The ``random`` scheduler: a control that allocates the budget at random.

A learned allocation is only worth its cost if it beats a random allocation
of the same spread (docs/scheduler.md). This scheduler draws a
fresh sigma for every sample at every step, uniformly, with the batch mean
held at 1/2 (so the mean budget is ``eps_min + lam / 2``, as with the
``mean`` allocation of the MLP) and a chosen standard deviation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.protocols import Budget, Cues
from ades_core.registries import SCHEDULERS

MAX_STD = 1 / math.sqrt(12)
"""The largest std of sigma: uniform over the whole range [0, 1]."""


def antithetic_uniform(batch: int, std: float, device: torch.device | str) -> Tensor:
    """``(batch,)`` values uniform on ``[1/2 - a, 1/2 + a]``, ``a = sqrt(3) * std``, mean exactly 1/2.

    Antithetic pairs: ``batch // 2`` offsets ``v`` uniform in ``[-a, a]`` and
    their negatives ``-v``, in a random order (an odd batch adds one sample at
    exactly 1/2). Each value is marginally uniform and the batch mean is 1/2 up
    to float rounding, with no rescaling or clipping. ``std`` in ``[0, 1/sqrt(12)]``.
    """
    if not 0.0 <= std <= MAX_STD + 1e-12:
        raise ValueError(f"std of sigma must be in [0, {MAX_STD:.6f}] (uniform over [0, 1]), got {std}")
    half_width = min(math.sqrt(3.0) * std, 0.5)
    half = batch // 2
    offsets = (torch.rand(half, device=device) * 2 - 1) * half_width
    paired = torch.cat([offsets, -offsets, offsets.new_zeros(batch - 2 * half)])
    return (0.5 + paired[torch.randperm(batch, device=device)]).clamp(0.0, 1.0)


class RandomAllocation(nn.Module):
    """``sigma_i`` drawn by :func:`antithetic_uniform` at every call; ``eps = eps_min + lam * sigma``.

    Ignores the cues (it uses only the batch size and device); no parameters.
    Under ``torchrun`` every rank's local batch has mean 1/2, so the global one does too.

    Args:
        std: standard deviation of sigma, in ``[0, 1/sqrt(12)]``; the eps std
            is ``lam * std``.
        eps_min, lam: budget bounds in [0, 1] pixel scale.
    """

    def __init__(self, *, std: float, eps_min: float, lam: float) -> None:
        super().__init__()
        if not 0.0 <= std <= MAX_STD + 1e-12:
            raise ValueError(f"std of sigma must be in [0, {MAX_STD:.6f}] (uniform over [0, 1]), got {std}")
        self.std = float(std)
        self.eps_min = float(eps_min)
        self.eps_max = float(eps_min + lam)

    def forward(self, cues: Cues) -> Budget:
        sigma = antithetic_uniform(cues.batch_size, self.std, cues.values.device)
        return Budget.from_sigma(sigma, self.eps_min, self.eps_max)


@SCHEDULERS.register(
    "random",
    description="control: uniform random sigma per sample and step, batch mean 1/2",
    learnable=False,
)
def random_scheduler(
    options: SchedulerOptions, *, num_cues: int, budget: BudgetConfig, allocation: str
) -> RandomAllocation:
    return RandomAllocation(std=options.random_std, eps_min=budget.eps_min, lam=budget.lam)
