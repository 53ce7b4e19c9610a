"""IAAT: instance adaptive adversarial training (Balaji, Goldstein, Hoffman, arXiv:1910.08051, 2019).

"Instance adaptive adversarial training: Improved accuracy tradeoffs in neural
nets". Every training sample keeps its own budget ``eps_i`` (L-inf as the
paper, or L2 with ``--norm l2``: the same rule on Euclidean radii) across
epochs, indexed by its dataset index, and each visit moves it by the paper's
three-point rule, as the authors' code does:

* warm-up (the first ``warmup`` epochs): ``eps_i = eps * [f(x_i) = y_i]``,
  the fixed budget for a sample the model classifies correctly, 0 otherwise
  (and at most ``max_eps``);
* afterwards, with ``e = eps_i`` stored at the last visit: attack at ``e``
  and at ``e + gamma``; the new value is ``e + gamma`` if the sample resists
  at ``e + gamma``, ``e`` if it resists only at ``e``, ``e - gamma`` if it
  breaks at ``e``; times ``[f(x_i) = y_i]``, clipped to ``[0, max_eps]``, and
  smoothed: ``eps_i <- beta * new + (1 - beta) * e``.

The model is then trained with cross-entropy on PGD at the new ``eps_i``.
Every PGD here (the two probes and the training attack) has the step size
``max(2 * eps_i / steps, alpha)``, random start, and ``steps`` steps, as in
the authors' code.

Defaults (the authors' CIFAR-10 config): ``warmup = 10`` epochs,
``gamma = 1.9/255``, ``beta = 0.1`` (the weight of the new value), the
warm-up budget ``--eps`` 8/255, PGD-10 with ``alpha`` 2/255; budgets start at
0. The authors' update has no upper bound; ``max_eps`` adds one (default
1 for L-inf, i.e. none; ``8 * eps`` for L2). In L2 the default ``gamma`` is the same fraction of the warm-up
budget, ``eps * 1.9 / 8`` (0.119 at ``eps`` 0.5), and the PGD step
``max(2 * eps_i / steps, alpha)`` with ``alpha`` 0 when unset. Differences: the clean correctness check runs in eval mode (the
authors' runs the model in train mode under ``no_grad``, which also moves the
BatchNorm statistics). The paper trains 110 epochs with a warm-up of 10; a
run shorter than the warm-up never adapts.

Per-sample state: ``budgets`` ``(num_samples,)``, each training sample's
``eps_i`` at its last visit, indexed by the dataset index, on the model's
device and in ``state_dict`` (checkpoints carry it; a resumed run goes on
from it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ades_core.defenses.mma import scaled_step_pgd
from ades_core.batch_reduction import LOCAL, BatchReduction
from ades_core.distributed import unwrap_model
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.protocols import Budget, StepOutput


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


class InstanceAdaptiveAdversarialTraining(nn.Module):
    """IAAT (see the module docstring for the rule and its defaults).

    Args:
        eps: the warm-up budget, in the norm's units.
        warmup: epochs (0-based epochs ``< warmup``) at the warm-up budget.
        gamma: the budget step of the three-point rule.
        beta: weight of the new value in ``beta * new + (1 - beta) * old``, in (0, 1].
        max_eps: upper bound of the budgets.
        norm: ``linf`` or ``l2``.
        steps, alpha: PGD steps and smallest step size.
        num_samples: training-set size; ``idx`` passed to :meth:`step` lies in
            ``[0, num_samples)``.
        reduction: writes the budgets by dataset index for the whole batch
            (:meth:`~ades_core.batch_reduction.BatchReduction.assign`: every rank's
            samples on every rank under ``torchrun``).
    """

    def __init__(
        self,
        *,
        eps: float,
        warmup: int,
        gamma: float,
        beta: float,
        max_eps: float,
        steps: int,
        alpha: float,
        num_samples: int,
        random_start: bool = True,
        autocast_dtype: torch.dtype | None = None,
        norm: str = "linf",
        reduction: BatchReduction = LOCAL,
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(
                "iaat keeps one budget per training sample: build it with num_samples = the "
                f"training-set size (build_defense(config, num_samples=N)), got {num_samples}"
            )
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"iaat beta must lie in (0, 1], got {beta}")
        self.name = "iaat"
        self.reduction = reduction
        self.eps = float(eps)
        self.warmup = int(warmup)
        self.gamma = float(gamma)
        self.beta = float(beta)
        self.max_eps = float(max_eps)
        self.steps = int(steps)
        self.alpha = float(alpha)
        self.random_start = random_start
        self.autocast_dtype = autocast_dtype
        self.norm = norm
        self.epoch = 0
        self.register_buffer("budgets", torch.zeros(num_samples))

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before each (0-based) epoch: warm-up or adaptive."""
        self.epoch = epoch

    @property
    def warming_up(self) -> bool:
        return self.epoch < self.warmup

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
        """PGD at per-sample ``eps`` ``(B,)``, step size ``max(2 eps / steps, alpha)``."""
        alpha = (2 * eps / self.steps).clamp(min=self.alpha)
        return scaled_step_pgd(
            model,
            x,
            y,
            eps,
            alpha,
            steps=self.steps,
            loss_fn=_cross_entropy,
            random_start=self.random_start,
            autocast_dtype=self.autocast_dtype,
            norm=self.norm,
        )

    def _resists(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
        x_adv = self.attack(model, x, y, eps)
        with torch.no_grad(), eval_mode(model), autocast_for(x, self.autocast_dtype):
            return model(x_adv).argmax(1) == y

    def next_budgets(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, correct: Tensor) -> Tensor:
        """The budgets ``(B,)`` for this visit (warm-up, or the three-point rule on ``budgets[idx]``)."""
        if self.warming_up:
            return torch.where(correct, min(self.eps, self.max_eps), 0.0).float()
        previous = self.budgets[idx]
        higher = previous + self.gamma
        resists_higher = self._resists(model, x, y, higher)
        resists_current = self._resists(model, x, y, previous)
        proposed = torch.where(
            resists_higher, higher, torch.where(resists_current, previous, previous - self.gamma)
        )
        proposed = torch.where(correct, proposed, 0.0).clamp(0.0, self.max_eps)
        return self.beta * proposed + (1 - self.beta) * previous

    def step(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        """One batch: update ``budgets[idx]``, then CE on PGD at them. ``model`` may be a DDP
        wrapper (only the training forward goes through it)."""
        train_model, model = model, unwrap_model(model)
        with torch.no_grad(), eval_mode(model), autocast_for(x, self.autocast_dtype):
            clean_logits = model(x).float()
        correct = clean_logits.argmax(1) == y
        eps = self.next_budgets(model, x, y, idx, correct)
        with torch.no_grad():
            self.reduction.assign(self.budgets, idx, eps)
        x_adv = self.attack(model, x, y, eps)
        with autocast_for(x, self.autocast_dtype):
            logits = train_model(x_adv).float()
        return StepOutput(
            loss=F.cross_entropy(logits, y),
            logits_adv=logits.detach(),
            budget=Budget(eps=eps, eps_min=0.0, eps_max=self.max_eps),
            logits_clean=clean_logits,
        )


def iaat_defense(parts) -> InstanceAdaptiveAdversarialTraining:
    """``DEFENSES`` factory: IAAT from ``parts.options`` (``iaat_*``), ``parts.budget.eps``
    (the warm-up budget) and ``parts.attack_options`` (steps, alpha)."""
    options = parts.options
    return InstanceAdaptiveAdversarialTraining(
        eps=parts.budget.eps,
        warmup=options.iaat_warmup,
        gamma=options.iaat_step(parts.attack_options.norm, parts.budget.eps),
        beta=options.iaat_beta,
        max_eps=options.iaat_cap(parts.attack_options.norm, parts.budget.eps),
        steps=parts.attack_options.steps,
        alpha=0.0 if parts.attack_options.alpha is None else parts.attack_options.alpha,
        num_samples=parts.num_samples,
        random_start=parts.attack_options.random_start,
        autocast_dtype=parts.autocast_dtype,
        norm=parts.attack_options.norm,
        reduction=parts.reduction,
    )


__all__ = ["InstanceAdaptiveAdversarialTraining", "iaat_defense"]
