"""The ``static`` scheduler (Static-DES): a fixed weighted mean of the cues."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.errors import InputError
from ades_core.protocols import Budget, Cues
from ades_core.registries import SCHEDULERS


class StaticWeightedCues(nn.Module):
    """``sigma = sum_j w_j c_j / sum_j w_j`` in [0, 1]; ``eps = eps_min + lam * sigma``.

    Args:
        weights: ``k`` non-negative weights, one per cue, with a positive sum;
            normalised to sum 1 so that cues in [0, 1] give ``sigma`` in [0, 1].
        eps_min, lam: budget bounds in [0, 1] pixel scale, ``eps_min + lam <= 1``.
    """

    def __init__(self, weights: Sequence[float], *, eps_min: float, lam: float) -> None:
        super().__init__()
        w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
        if w.numel() == 0 or bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ValueError(f"static weights must be non-negative with a positive sum, got {list(weights)}")
        self.register_buffer("weights", (w / w.sum()).float())
        self.eps_min = float(eps_min)
        self.eps_max = float(eps_min + lam)

    def forward(self, cues: Cues) -> Budget:
        if cues.values.shape[1] != self.weights.numel():
            raise ValueError(
                f"static scheduler has {self.weights.numel()} weights but got "
                f"{cues.values.shape[1]} cues {cues.names}"
            )
        sigma = (cues.values @ self.weights.to(cues.values.device)).clamp(0.0, 1.0)
        return Budget.from_sigma(sigma, self.eps_min, self.eps_max)


@SCHEDULERS.register(
    "static", description="fixed weighted mean of the cues (Static-DES)", learnable=False
)
def static_scheduler(
    options: SchedulerOptions, *, num_cues: int, budget: BudgetConfig, allocation: str
) -> StaticWeightedCues:
    if num_cues == 0:
        raise InputError("the static scheduler needs at least one cue (--cue)")
    weights = options.weights if options.weights is not None else (1.0,) * num_cues
    return StaticWeightedCues(weights, eps_min=budget.eps_min, lam=budget.lam)
