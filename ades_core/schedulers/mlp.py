"""The ``mlp`` scheduler: ADES's learnable ``phi_w`` (2 layers, ReLU, sigmoid)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.batch_reduction import LOCAL, BatchReduction
from ades_core.errors import InputError
from ades_core.protocols import Budget, Cues
from ades_core.registries import SCHEDULERS

ALLOCATIONS = ("free", "mean", "quantile")

QUANTILE_POINTS = 65
"""Points of the quantile function of measured targets the ``quantile`` allocation keeps."""

QUANTILE_MOMENTUM = 0.1
"""Weight of each batch's measured quantiles in their running average (about 10 batches of memory)."""


def centre_sigma(raw: torch.Tensor, reduction: BatchReduction = LOCAL) -> torch.Tensor:
    """Hold the batch mean of sigma at exactly 0.5, with nothing to clip.

    ``sigma_i = 0.5 + 0.5 * (s_i - mean(s))`` for ``s`` in (0, 1): the result
    lies in (0, 1) for every input, its batch mean is 0.5, and only the
    allocation across samples is learned (``(B,)`` -> ``(B,)``).

    The mean is ``reduction.mean``: over ``raw`` itself
    (:data:`~ades_core.batch_reduction.LOCAL`), or under ``torchrun`` over the
    global batch (:class:`~ades_core.batch_reduction.RankReduction`: an
    all-reduce of the local sums and counts whose backward is exact), so the
    global mean of sigma is 0.5.
    """
    return 0.5 + 0.5 * (raw - reduction.mean(raw))


def batch_ranks(score: Tensor) -> Tensor:
    """``(B,)`` -> ``(B,)`` float positions in (0, 1): ``(rank_i + 1/2) / B`` of ``score_i`` in its batch
    (ties broken by index; local to the rank's batch under ``torchrun``)."""
    order = torch.argsort(score.detach(), stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(score.shape[0], device=score.device)
    return (ranks.to(torch.float32) + 0.5) / score.shape[0]


def interpolate_quantiles(table: Tensor, positions: Tensor) -> Tensor:
    """Linear interpolation of the quantile function ``table`` ``(Q,)`` (at ``0, 1/(Q-1), ..., 1``)
    at ``positions`` ``(B,)`` in [0, 1]."""
    scaled = positions.clamp(0.0, 1.0) * (table.shape[0] - 1)
    low = scaled.floor().long().clamp(max=table.shape[0] - 2)
    weight = scaled - low
    return table[low] * (1 - weight) + table[low + 1] * weight


class MLPScheduler(nn.Module):
    """``sigma = sigmoid(W2 relu(W1 c + b1) + b2)``; ``eps = eps_min + lam * sigma``.

    Args:
        num_cues: ``k``, the width of the cue vector.
        hidden: width of the hidden layer.
        eps_min, lam: budget bounds in [0, 1] pixel scale.
        allocation: ``free`` (sigma is the MLP's output; the mean budget may
            drift) or ``mean`` (:func:`centre_sigma`: the batch mean budget is
            held at ``eps_min + lam / 2`` exactly and only its allocation is learned)
            or ``quantile`` (the budgets are the running quantiles of the measured
            robustness targets, :meth:`record_targets`, assigned by the rank of the
            MLP's output in the batch; the batch mean is held exactly as with
            ``mean``; the output itself is fitted to the target as ``Budget.score``).
        init_std: std of the output layer's weights at initialisation (its bias
            starts at 0). The default 1e-2 starts sigma at about 0.5 for every
            sample; 0 starts it at exactly 0.5; larger values start with a
            spread (the hidden layer keeps PyTorch's default initialisation).

    The ``mean`` and ``quantile`` allocations centre sigma with the mean of
    the batch the cues describe, through ``cues.reduction`` (the global batch
    under ``torchrun``, :mod:`ades_core.batch_reduction`); the ranks and the
    quantile table of ``quantile`` are each rank's own.
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
            raise InputError("the mlp scheduler needs at least one cue (--cue)")
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
        if allocation == "quantile":
            # The quantile function of the measured targets on the sigma scale (sorted, in [0, 1]).
            # Before the first batch is measured it is uniform over [0, 1], so even the first step
            # gives per-sample budgets (in the order of the untrained output); the first measured
            # batch replaces it.
            self.register_buffer("target_quantiles", torch.linspace(0.0, 1.0, QUANTILE_POINTS))
            self.register_buffer("targets_seen", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def record_targets(self, target_sigma: Tensor, fitted: Tensor) -> None:
        """Fold one batch's measured targets into the running quantile function (``quantile`` only).

        ``target_sigma`` ``(B,)`` in [0, 1] (the targets on the sigma scale),
        ``fitted`` ``(B,)`` bool (the samples the objective fits; held-out ones
        are left out). The batch's quantiles at :data:`QUANTILE_POINTS` points
        replace the table on the first batch and enter a running average with
        weight :data:`QUANTILE_MOMENTUM` after; a batch with no fitted sample
        changes nothing. Host-sync free: the "any fitted" test is a tensor ``where``.
        """
        if self.allocation != "quantile":
            raise RuntimeError(f"record_targets needs the quantile allocation, this scheduler's is {self.allocation!r}")
        values = torch.where(fitted, target_sigma.float(), torch.full_like(target_sigma, float("nan"), dtype=torch.float32))
        levels = torch.linspace(0.0, 1.0, QUANTILE_POINTS, device=values.device)
        batch = torch.nanquantile(values, levels)
        weight = torch.where(self.targets_seen > 0, QUANTILE_MOMENTUM, 1.0)
        any_fitted = fitted.any()
        updated = self.target_quantiles * (1 - weight) + torch.nan_to_num(batch, nan=0.5) * weight
        self.target_quantiles.copy_(torch.where(any_fitted, updated, self.target_quantiles))
        self.targets_seen.add_(any_fitted.long())

    def forward(self, cues: Cues) -> Budget:
        values = cues.values
        if values.shape[1] != self.num_cues:
            raise ValueError(
                f"mlp scheduler was built for {self.num_cues} cues, got {values.shape[1]} {cues.names}"
            )
        first = self.net[0].weight
        raw = torch.sigmoid(self.net(values.to(first.dtype)).squeeze(1).float())
        if self.allocation == "quantile":
            quantile = interpolate_quantiles(self.target_quantiles, batch_ranks(raw))
            return Budget.from_sigma(centre_sigma(quantile, cues.reduction), self.eps_min, self.eps_max, score=raw)
        sigma = centre_sigma(raw, cues.reduction) if self.allocation == "mean" else raw
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
