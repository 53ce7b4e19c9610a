"""MMA: max-margin adversarial training (Ding, Sharma, Lui, Huang, ICLR 2020).

"MMA Training: Direct Input Space Margin Maximization through Adversarial
Training". Each correctly classified sample is trained on the closest point
on the decision boundary the attack finds, so the model grows each sample's
own input margin, in the L-inf or (``--norm l2``) the L2 norm, as the paper
defines MMA for both; misclassified samples get the clean cross-entropy.

The margin search is the paper's AN-PGD ("adaptive norm" PGD), as in the
authors' code:

1. PGD of ``steps`` steps on the soft logit margin
   ``logsumexp_{j != y} z_j - z_y`` at the radius ``r_i`` where the search
   starts (the margin stored for this sample at its last visit, at least
   ``min_eps``), step size ``2.5 * r_i / steps``, random start;
2. the direction ``u_i = (x_pgd - x) / r_i`` (``||u_i|| <= 1`` in the norm; clipping
   ``x + t u_i`` to [0, 1] keeps it within ``t``, since ``x`` lies in the box);
3. a bisection along ``x + t u_i`` (clipped to [0, 1]) over
   ``t in [0, search_cap]``: the first point tested is ``t = r_i`` (PGD's
   result), then ``search_steps`` midpoints; "flipped" means the logit margin
   ``max_{j != y} z_j - z_y >= 0``. The sample's margin ``eps_i`` is the
   smallest ``t`` found to flip, within ``search_cap / 2**search_steps``, or
   ``search_cap`` when no flip was found.

``search_cap = 1.05 * max_eps`` (the authors' ``attack_maxeps``); the
training loss is their hinge: a correct sample whose margin is ``>= max_eps``
(``d_max``) adds nothing. The loss of a batch of ``B``::

    clean_weight * mean_i CE(f(x_i), y_i)
      + (1 - clean_weight) * (1/B) * [ sum_{i correct, eps_i < max_eps} CE(f(x_i + eps_i u_i), y_i)
                                      + sum_{i misclassified} CE(f(x_i), y_i) ]

with ``clean_weight = 1/3`` (the paper's MMA; 0 is its "OMMA"). Defaults
follow the authors' L-inf CIFAR-10 setting: ``max_eps = 32/255`` (their
MMA-32; the paper also trains MMA-12 and MMA-20; in L2 the default is their
MMA-2.0, ``max_eps = 2.0``, they also train MMA-1.0 and MMA-3.0), ``min_eps = 0.005``,
10 PGD steps, 10 bisection steps.

Differences from the authors' code, for the device and the trainer: the
search runs on the whole batch and masks the misclassified samples out
(their code gathers the correct ones, a host-device synchronisation); the
bisection's "flipped" test is the hard logit margin by default (the
paper's definition of the margin; their code tests the soft margin, which
flips slightly earlier: ``--mma-margin soft``, the ``mma`` recipe), and the point trained on is the smallest flipping ``t`` found
(theirs: the last midpoint, on either side of the boundary); the trained
point is clipped to [0, 1]. The clean and the MMA losses are one loss (their
code combines the two gradients with the same weights).

Per-sample state: ``margins`` ``(num_samples,)``, the margin found at each
training sample's last visit (0 when it was misclassified), indexed by the
dataset index, on the model's device and in ``state_dict`` (so checkpoints
carry it); the next search starts from it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ades_core.attacks.pgd import budget_column
from ades_core.batch_reduction import LOCAL, BatchReduction
from ades_core.distributed import unwrap_model
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.norms import NORMS
from ades_core.protocols import Budget, StepOutput

SEARCH_CAP_FACTOR = 1.05
"""The search looks for margins up to ``1.05 * max_eps`` (the authors' ``attack_maxeps``)."""

PGD_STEP_SCALE = 2.5
"""AN-PGD's step size is ``2.5 * r / steps`` for a search started at radius ``r``."""


def soft_logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``logsumexp_{j != y} z_j - z_y`` per sample, ``(B, K), (B,) -> (B,)``: AN-PGD's attack loss."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return torch.logsumexp(others, dim=1) - true


def logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{j != y} z_j - z_y`` per sample: ``< 0`` exactly when ``y`` is the unique top class."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - true


MARGIN_TESTS = {"hard": logit_margin, "soft": soft_logit_margin}
"""The bisection's "flipped" test by name (``DefenseOptions.mma_margin``): a point flips the
sample when this margin is >= 0. ``hard``: the logit margin (the paper's definition of the
margin); ``soft``: the log-sum-exp margin (the authors' code), which flips slightly earlier."""


def scaled_step_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    alpha: Tensor,
    *,
    steps: int,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    random_start: bool = True,
    autocast_dtype: torch.dtype | None = None,
    norm: str = "linf",
) -> Tensor:
    """PGD with a radius *and a step size* per sample (MMA's AN-PGD, IAAT's attack), L-inf or L2.

    Each step: ``x <- P(x + alpha_i * d(grad_x loss_fn))`` with ``d`` the
    norm's unit ascent direction and ``P`` the projection onto sample ``i``'s
    ball and [0, 1] (L-inf: ``sign`` and ``clip_[lo_i, hi_i]``,
    ``lo_i = max(x0 - eps_i, 0)``, ``hi_i = min(x0 + eps_i, 1)``; L2: the
    normalised gradient, the ball then the box, see :class:`~ades_core.norms.L2Norm`).
    The random start is uniform in each ball. The model runs in eval mode
    (every submodule's mode restored afterwards); only input gradients are
    computed; no host-device synchronisation.

    Args:
        x: ``(B, C, H, W)`` in [0, 1]; ``y``: ``(B,)``.
        eps, alpha: ``(B,)`` radii and step sizes in the norm's units, pixel space.
        loss_fn: ``(logits (B, K), y (B,)) -> (B,)``, maximised.
        norm: ``linf`` or ``l2``.

    Returns:
        the detached ``x_adv`` of ``x``'s shape and dtype.
    """
    x = x.detach()
    x32 = x.float()
    radius = budget_column(eps, x)
    step = budget_column(alpha, x)
    threat = NORMS.get(norm)
    project = threat.projector(x32, radius)
    x_adv = threat.uniform_start(x32, radius) if random_start else x32.clone()
    x_adv = project(x_adv)
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with autocast_for(x_adv, autocast_dtype):
                logits = model(x_adv)
            (grad,) = torch.autograd.grad(loss_fn(logits, y).sum(), x_adv)
            x_adv = project(x_adv.detach() + step * threat.ascent_direction(grad))
    return x_adv.detach().to(x.dtype)


class MaxMarginAdversarialTraining(nn.Module):
    """MMA training (see the module docstring for the algorithm and its defaults).

    Args:
        max_eps: ``d_max`` of the hinge in the norm's units (> 0; at most 1 for L-inf).
        min_eps: smallest radius a search starts from, in ``(0, max_eps)`` (the
            search direction is the PGD perturbation divided by this radius).
        clean_weight: weight of the clean cross-entropy, in [0, 1].
        steps: AN-PGD steps; ``search_steps``: bisection steps.
        num_samples: training-set size; ``idx`` passed to :meth:`step` lies in
            ``[0, num_samples)``.
        random_start: AN-PGD starts at a random point of its ball.
        autocast_dtype: dtype of autocast for the forward passes, or ``None``.
        norm: ``linf`` or ``l2``: the norm of the margins.
        reduction: writes the margins by dataset index for the whole batch
            (:meth:`~ades_core.batch_reduction.BatchReduction.assign`: every rank's
            samples on every rank under ``torchrun``).
    """

    def __init__(
        self,
        *,
        max_eps: float,
        min_eps: float,
        clean_weight: float,
        steps: int,
        search_steps: int,
        num_samples: int,
        random_start: bool = True,
        autocast_dtype: torch.dtype | None = None,
        norm: str = "linf",
        margin: str = "hard",
        reduction: BatchReduction = LOCAL,
    ) -> None:
        super().__init__()
        if margin not in MARGIN_TESTS:
            raise ValueError(f"mma margin test {margin!r} is not one of: {', '.join(MARGIN_TESTS)}")
        limit = NORMS.get(norm).budget_limit()
        if not 0.0 < min_eps < max_eps <= limit:
            raise ValueError(
                f"mma needs 0 < min_eps < max_eps <= {limit:g} ({norm}), got min_eps {min_eps}, max_eps {max_eps}"
            )
        if num_samples < 1:
            raise ValueError(
                "mma keeps one margin per training sample: build it with num_samples = the "
                f"training-set size (build_defense(config, num_samples=N)), got {num_samples}"
            )
        self.name = "mma"
        self.reduction = reduction
        self.max_eps = float(max_eps)
        self.norm = norm
        self.search_cap = min(limit, SEARCH_CAP_FACTOR * self.max_eps)
        self.min_eps = float(min_eps)
        self.clean_weight = float(clean_weight)
        self.steps = int(steps)
        self.search_steps = int(search_steps)
        self.random_start = random_start
        self.autocast_dtype = autocast_dtype
        self.margin = margin
        self._flip_margin = MARGIN_TESTS[margin]
        self.register_buffer("margins", torch.zeros(num_samples))

    def search_start(self, idx: Tensor) -> Tensor:
        """``(B,)`` radii the search starts from: the stored margins, at least ``min_eps``."""
        return self.margins[idx].clamp(self.min_eps, self.search_cap)

    def search_margin(self, model: nn.Module, x: Tensor, y: Tensor, start: Tensor) -> tuple[Tensor, Tensor]:
        """AN-PGD from radii ``start`` ``(B,)``: ``(x_adv, eps)`` with ``eps`` ``(B,)`` the margins
        found (``search_cap`` where none was) and ``x_adv = clip(x + eps * u, 0, 1)``."""
        x_pgd = scaled_step_pgd(
            model,
            x,
            y,
            start,
            PGD_STEP_SCALE * start / self.steps,
            steps=self.steps,
            loss_fn=soft_logit_margin,
            random_start=self.random_start,
            autocast_dtype=self.autocast_dtype,
            norm=self.norm,
        )
        x32 = x.detach().float()
        direction = (x_pgd.float() - x32) / budget_column(start, x)
        low = torch.zeros_like(start)
        high = torch.full_like(start, self.search_cap)
        tested = start
        with torch.no_grad(), eval_mode(model):
            point = x_pgd
            for _ in range(self.search_steps + 1):
                with autocast_for(point, self.autocast_dtype):
                    flipped = self._flip_margin(model(point), y) >= 0
                high = torch.where(flipped, torch.minimum(high, tested), high)
                low = torch.where(flipped, low, torch.maximum(low, tested))
                tested = (low + high) / 2
                point = (x32 + budget_column(tested, x) * direction).clamp_(0.0, 1.0)
        x_adv = (x32 + budget_column(high, x) * direction).clamp_(0.0, 1.0)
        return x_adv.to(x.dtype), high

    def step(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        """One batch's MMA loss; updates ``margins[idx]``. ``model`` may be a DDP wrapper
        (only the MMA forward goes through it; the clean forward and the search use the module)."""
        train_model, model = model, unwrap_model(model)
        batch = x.shape[0]
        with torch.set_grad_enabled(self.clean_weight > 0), autocast_for(x, self.autocast_dtype):
            clean_logits = model(x).float()  # train mode, as the authors' clean pass
        correct = logit_margin(clean_logits.detach(), y) < 0
        x_found, found = self.search_margin(model, x, y, self.search_start(idx))
        eps = torch.where(correct, found, torch.zeros_like(found))
        with torch.no_grad():
            self.reduction.assign(self.margins, idx, eps)
        model_input = torch.where(correct.view(-1, *([1] * (x.ndim - 1))), x_found, x)
        with autocast_for(x, self.autocast_dtype):
            logits = train_model(model_input).float()
        per_sample = F.cross_entropy(logits, y, reduction="none")
        counted = ~correct | (eps < self.max_eps)  # the hinge: margins >= d_max add nothing
        mma_loss = (per_sample * counted).sum() / batch
        loss = (1 - self.clean_weight) * mma_loss
        if self.clean_weight > 0:
            loss = loss + self.clean_weight * F.cross_entropy(clean_logits, y)
        return StepOutput(
            loss=loss,
            logits_adv=logits.detach(),
            budget=Budget(eps=eps, eps_min=0.0, eps_max=self.search_cap),
            logits_clean=clean_logits.detach(),
        )


def mma_defense(parts) -> MaxMarginAdversarialTraining:
    """``DEFENSES`` factory: MMA from ``parts.options`` (``mma_*``) and ``parts.attack_options.steps``."""
    options = parts.options
    return MaxMarginAdversarialTraining(
        max_eps=options.mma_d_max(parts.attack_options.norm),
        min_eps=options.mma_min_eps,
        clean_weight=options.mma_clean_weight,
        steps=parts.attack_options.steps,
        search_steps=options.mma_search_steps,
        num_samples=parts.num_samples,
        random_start=parts.attack_options.random_start,
        autocast_dtype=parts.autocast_dtype,
        norm=parts.attack_options.norm,
        reduction=parts.reduction,
        margin=options.mma_margin,
    )


__all__ = [
    "MaxMarginAdversarialTraining",
    "logit_margin",
    "mma_defense",
    "scaled_step_pgd",
    "soft_logit_margin",
]
