"""FGSM: one gradient step to the edge of each sample's ball (L-inf: sign; L2: normalised) (for quick checks)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ades_core.attacks.gradients import loss_input_gradient
from ades_core.attacks.pgd import budget_column
from ades_core.config import AttackOptions
from ades_core.model_mode import eval_mode
from ades_core.norms import NORMS
from ades_core.registries import ATTACK_LOSSES, ATTACKS


class FGSM:
    """The fast gradient (sign) method with per-sample budgets.

    ``x_adv = clip_[0, 1](x + eps_i * d(grad_x loss(f(x), y)))``, computed in
    float32, with ``d`` the norm's unit ascent direction: ``sign`` for L-inf
    (FGSM), ``grad / ||grad||_2`` for L2 (FGM); clipping keeps the point in
    the ball since ``x`` lies in [0, 1]. One forward and one input-gradient backward, in eval mode (modes
    restored exactly afterwards); parameter ``.grad`` is untouched. A weak
    attack: use it for smoke tests, never to claim robustness.

    Args:
        loss: a name in ``ATTACK_LOSSES`` (``ce``, ``cw``) or a callable
            ``(logits (B, K), y (B,)) -> (B,)`` to maximise.
        autocast_dtype: dtype for autocast of the forward pass, or ``None``.
        norm: ``linf`` or ``l2`` (:data:`~ades_core.norms.NORMS`).
    """

    def __init__(self, *, loss: str = "ce", autocast_dtype: torch.dtype | None = None, norm: str = "linf") -> None:
        self.loss_fn = ATTACK_LOSSES.get(loss) if isinstance(loss, str) else loss
        self.autocast_dtype = autocast_dtype
        self.norm = NORMS.get(norm)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor | float) -> Tensor:
        """``x`` ``(B, C, H, W)`` in [0, 1], ``y`` ``(B,)``, ``eps`` ``(B,)`` or float -> ``x_adv``."""
        x = x.detach()
        radius = budget_column(eps, x)
        x32 = x.float()
        with eval_mode(model):  # the float32 gradient's direction in every precision
            grad, _ = loss_input_gradient(model, x32, y, self.loss_fn, autocast_dtype=self.autocast_dtype)
        x_adv = (x32 + radius * self.norm.ascent_direction(grad)).clamp_(0.0, 1.0)
        return x_adv.to(x.dtype)


@ATTACKS.register(
    "fgsm", description="FGSM: one sign step of size eps (L2: one normalised step; quick checks only)",
    paper="Goodfellow et al. 2015", norms=("linf", "l2"),
)
def fgsm_attack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> FGSM:
    """Uses ``options.loss``; steps, alpha and random_start do not apply."""
    return FGSM(loss=options.loss, autocast_dtype=autocast_dtype, norm=options.norm)
