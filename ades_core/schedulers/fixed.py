"""The ``fixed`` scheduler: one budget for every sample (PGD-AT)."""

from __future__ import annotations

import torch
from torch import nn

from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.protocols import Budget, Cues
from ades_core.registries import SCHEDULERS


class FixedBudget(nn.Module):
    """``eps_x = eps`` for every sample; ignores the cues; no parameters."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1] (pixel scale), got {eps}")
        self.eps_min = self.eps_max = float(eps)

    def forward(self, cues: Cues) -> Budget:
        eps = torch.full((cues.batch_size,), self.eps_min, device=cues.values.device)
        return Budget(eps=eps, sigma=None, eps_min=self.eps_min, eps_max=self.eps_max)


@SCHEDULERS.register("fixed", description="the same budget eps for every sample (PGD-AT)")
def fixed_scheduler(
    options: SchedulerOptions, *, num_cues: int, budget: BudgetConfig, allocation: str
) -> FixedBudget:
    return FixedBudget(budget.eps)
