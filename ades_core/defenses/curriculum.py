"""CAT: curriculum adversarial training, the attack's strength raised over training.

Cai, Liu, Song, "Curriculum Adversarial Training", IJCAI 2018, train first
against weak attacks and raise the attack's strength (their PGD steps ``k``,
``0 .. K``) lesson by lesson, moving to the next lesson when the validation
accuracy at the current one stops improving, with "batch mixing" of all
strengths up to the current one. The variant here is the simple, widely used
schedule over epochs instead of over validation plateaus:

* the budget rises linearly: ``eps_t = eps * min(1, (t + 1) / R)`` at the
  0-based epoch ``t``, with ``R = max(1, ceil(ramp * epochs))`` ramp epochs
  (``ramp``: ``--cat-ramp``, default 0.5: the budget reaches ``eps`` half way
  through and stays there);
* optionally (``--cat-steps``) the PGD steps rise with it, Cai et al.'s
  attack-strength curriculum: ``k_t = max(1, ceil(K * min(1, (t + 1) / R)))``
  from 1 to the run's ``--steps`` ``K``, step size ``--alpha`` throughout.

The model is trained with cross-entropy on PGD at ``eps_t`` (Madry's outer
loss). Not implemented from Cai et al.: plateau-triggered lessons (they need
a validation split and make the run's length data-dependent), batch mixing
and their quantisation. The trainer calls :meth:`start_epoch` before every
epoch, also the first one of a resumed run, so the schedule needs no state
of its own.
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ades_core.config import AttackOptions
from ades_core.distributed import unwrap_model
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.protocols import Budget, BudgetedAttack, StepOutput
from ades_core.registries import ATTACKS


def ramp_fraction(epoch: int, epochs: int, ramp: float) -> float:
    """``min(1, (epoch + 1) / R)``, ``R = max(1, ceil(ramp * epochs))``, for the 0-based ``epoch``."""
    ramp_epochs = max(1, math.ceil(ramp * epochs))
    return min(1.0, (epoch + 1) / ramp_epochs)


@attrs.frozen(kw_only=True)
class CurriculumSchedule:
    """The budget and PGD steps of each epoch.

    Attributes:
        eps: the final budget, [0, 1] pixel scale.
        steps: the final number of PGD steps ``K``.
        ramp: fraction of the epochs over which they rise, in (0, 1].
        raise_steps: raise the steps too (else ``K`` throughout).
    """

    eps: float
    steps: int
    ramp: float
    raise_steps: bool = False

    def at(self, epoch: int, epochs: int) -> tuple[float, int]:
        """``(eps_t, steps_t)`` at the 0-based ``epoch`` of ``epochs``."""
        fraction = ramp_fraction(epoch, epochs, self.ramp)
        steps = max(1, math.ceil(self.steps * fraction)) if self.raise_steps else self.steps
        return self.eps * fraction, steps


class CurriculumAdversarialTraining(nn.Module):
    """PGD adversarial training under a :class:`CurriculumSchedule`.

    Until :meth:`start_epoch` is first called, the budget and steps are the
    final ones (no curriculum).

    Args:
        schedule: the curriculum.
        attack_options: the training attack's options; the attack of ``k``
            steps is built from them with ``steps = k`` (``ATTACKS`` registry).
        autocast_dtype: dtype of autocast for the forward passes, or ``None``.
    """

    def __init__(
        self,
        *,
        schedule: CurriculumSchedule,
        attack_options: AttackOptions,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.name = "cat"
        self.schedule = schedule
        self.attack_options = attack_options
        self.autocast_dtype = autocast_dtype
        self._attacks: dict[int, BudgetedAttack] = {}
        self.eps, self.steps = schedule.eps, schedule.steps

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Set this epoch's budget and steps (called by the trainer before each epoch)."""
        self.eps, self.steps = self.schedule.at(epoch, epochs)

    @property
    def attack(self) -> BudgetedAttack:
        """The training attack with this epoch's number of steps."""
        if self.steps not in self._attacks:
            options = attrs.evolve(self.attack_options, steps=self.steps)
            self._attacks[self.steps] = ATTACKS.build(
                options.name, options, autocast_dtype=self.autocast_dtype
            )
        return self._attacks[self.steps]

    def step(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        """CE on PGD at this epoch's ``eps_t``. ``model`` may be a DDP wrapper (only the
        training forward goes through it)."""
        train_model, model = model, unwrap_model(model)
        eps = torch.full((x.shape[0],), self.eps, device=x.device)
        x_adv = self.attack(model, x, y, eps)
        with autocast_for(x, self.autocast_dtype):
            logits = train_model(x_adv).float()
        with torch.no_grad(), eval_mode(model), autocast_for(x, self.autocast_dtype):
            clean_logits = model(x).float()
        return StepOutput(
            loss=F.cross_entropy(logits, y),
            logits_adv=logits.detach(),
            budget=Budget(eps=eps, eps_min=0.0, eps_max=self.schedule.eps),
            logits_clean=clean_logits,
        )


def cat_defense(parts) -> CurriculumAdversarialTraining:
    """``DEFENSES`` factory: the curriculum to ``parts.budget.eps`` and ``parts.attack_options.steps``
    over ``cat_ramp`` of the epochs (``cat_steps``: the steps rise too)."""
    options = parts.options
    schedule = CurriculumSchedule(
        eps=parts.budget.eps,
        steps=parts.attack_options.steps,
        ramp=options.cat_ramp,
        raise_steps=options.cat_steps,
    )
    return CurriculumAdversarialTraining(
        schedule=schedule, attack_options=parts.attack_options, autocast_dtype=parts.autocast_dtype
    )


__all__ = [
    "CurriculumAdversarialTraining",
    "CurriculumSchedule",
    "cat_defense",
    "ramp_fraction",
]
