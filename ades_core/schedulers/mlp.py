"""The ``mlp`` scheduler: ADES's learnable ``phi_w`` (2 layers, ReLU, sigmoid)."""

from __future__ import annotations

import torch
from torch import nn

from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.distributed import batch_mean
from ades_core.protocols import Budget, Cues
from ades_core.registries import SCHEDULERS

ALLOCATIONS = ("free", "mean")


def centre_sigma(raw: torch.Tensor) -> torch.Tensor:
    """Hold the batch mean of sigma at exactly 0.5, with nothing to clip.

    ``sigma_i = 0.5 + 0.5 * (s_i - mean(s))`` for ``s`` in (0, 1): the result
    lies in (0, 1) for every input, its batch mean is 0.5, and only the
    allocation across samples is learned (``(B,)`` -> ``(B,)``).

    Under ``torchrun`` the mean is over the global batch
    (:func:`ades_core.distributed.batch_mean`: an all-reduce of the local sums
    and counts whose backward is exact), so the global mean of sigma is 0.5.
    """
    return 0.5 + 0.5 * (raw - batch_mean(raw))


class MLPScheduler(nn.Module):
    """``sigma = sigmoid(W2 relu(W1 c + b1) + b2)``; ``eps = eps_min + lam * sigma``.

    Args:
        num_cues: ``k``, the width of the cue vector.
        hidden: width of the hidden layer.
        eps_min, lam: budget bounds in [0, 1] pixel scale.
        allocation: ``free`` (sigma is the MLP's output; the mean budget may
            drift) or ``mean`` (:func:`centre_sigma`: the batch mean budget is
            held at ``eps_min + lam / 2`` exactly and only its allocation is learned).
        init_std: std of the output layer's weights at initialisation (its bias
            starts at 0). The default 1e-2 starts sigma at about 0.5 for every
            sample; 0 starts it at exactly 0.5; larger values start with a
            spread (the hidden layer keeps PyTorch's default initialisation).
    """

    def __init__(
        self,
        num_cues: int,
        *,
        hidden: int,
        eps_min: float,
        lam: float,
        allocation: str = "free",
        init_std: float = 1e-2,
    ) -> None:
        super().__init__()
        if num_cues < 1:
            raise ValueError("the mlp scheduler needs at least one cue (--cue)")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation {allocation!r} is not one of: {', '.join(ALLOCATIONS)}")
        if not init_std >= 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        self.net = nn.Sequential(nn.Linear(num_cues, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.normal_(self.net[2].weight, std=init_std)
        nn.init.zeros_(self.net[2].bias)
        self.num_cues = num_cues
        self.allocation = allocation
        self.eps_min = float(eps_min)
        self.eps_max = float(eps_min + lam)

    def forward(self, cues: Cues) -> Budget:
        values = cues.values
        if values.shape[1] != self.num_cues:
            raise ValueError(
                f"mlp scheduler was built for {self.num_cues} cues, got {values.shape[1]} {cues.names}"
            )
        first = self.net[0].weight
        raw = torch.sigmoid(self.net(values.to(first.dtype)).squeeze(1).float())
        sigma = centre_sigma(raw) if self.allocation == "mean" else raw
        return Budget.from_sigma(sigma, self.eps_min, self.eps_max)


@SCHEDULERS.register(
    "mlp", description="learnable 2-layer MLP (ReLU, sigmoid) on the cues (ADES)", learnable=True
)
def mlp_scheduler(
    options: SchedulerOptions, *, num_cues: int, budget: BudgetConfig, allocation: str
) -> MLPScheduler:
    return MLPScheduler(
        num_cues,
        hidden=options.hidden,
        eps_min=budget.eps_min,
        lam=budget.lam,
        allocation=allocation,
        init_std=options.init_std,
    )
