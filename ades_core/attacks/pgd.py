"""L-inf PGD with one budget per sample."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ades_core.config import AttackOptions
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.registries import ATTACK_LOSSES, ATTACKS


def budget_column(eps: Tensor | float, x: Tensor) -> Tensor:
    """``eps`` as a float32 ``(B, 1, ..., 1)`` column on ``x``'s device, broadcastable to ``x``.

    Raises:
        ValueError: ``eps`` is a tensor whose shape is neither ``()`` nor ``(B,)``.
    """
    batch = x.shape[0]
    if not isinstance(eps, Tensor):
        eps = torch.tensor(float(eps), device=x.device)
    if eps.ndim == 0:
        eps = eps.expand(batch)
    if eps.shape != (batch,):
        raise ValueError(f"eps must be a float or a (B,) = ({batch},) tensor, got shape {tuple(eps.shape)}")
    return eps.detach().to(device=x.device, dtype=torch.float32).view(batch, *([1] * (x.ndim - 1)))


class PGD:
    """Projected gradient ascent with sign steps in per-sample L-inf balls.

    Each step: ``x <- clip_[lo, hi](x + alpha * sign(grad_x loss))`` with
    ``lo = max(x0 - eps_i, 0)``, ``hi = min(x0 + eps_i, 1)``; the projection
    runs in float32 whatever the autocast dtype of the forward pass. The model
    runs in eval mode during the attack (no BN statistic updates, dropout off)
    and every submodule's mode is restored exactly afterwards. Only input
    gradients are computed (``torch.autograd.grad`` w.r.t. the input); parameter
    ``.grad`` is untouched. No host-device synchronisation in the loop.

    Args:
        steps: number of gradient steps (>= 1).
        alpha: step size in [0, 1] pixel scale (2/255 in the paper).
        random_start: start from a uniform point in the ball (Madry et al.).
        loss: a name in ``ATTACK_LOSSES`` (``ce``, ``cw``) or a callable
            ``(logits (B, K), y (B,)) -> (B,)`` to maximise.
        autocast_dtype: dtype for autocast of the forward pass, or ``None``.
    """

    accepts_start = True  # __call__ takes start= and start_grad= (shared cue computation)

    def __init__(
        self,
        *,
        steps: int,
        alpha: float,
        random_start: bool = True,
        loss: str = "ce",
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if steps < 1:
            raise ValueError(f"PGD steps must be >= 1, got {steps}")
        if not alpha > 0:
            raise ValueError(f"PGD step size alpha must be positive, got {alpha}")
        self.steps = steps
        self.alpha = float(alpha)
        self.random_start = random_start
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn = ATTACK_LOSSES.get(loss) if isinstance(loss, str) else loss
        self.autocast_dtype = autocast_dtype

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        eps: Tensor | float,
        *,
        start: Tensor | None = None,
        start_grad: Tensor | None = None,
    ) -> Tensor:
        """``x`` ``(B, C, H, W)`` in [0, 1], ``y`` ``(B,)``, ``eps`` ``(B,)`` or float -> ``x_adv``.

        Args:
            start: a starting point ``(B, C, H, W)`` instead of the random start
                (it is projected into each ball and the box first).
            start_grad: the gradient of the attack loss at ``start``, already
                computed by the caller (for example while extracting cues); the
                first step uses it instead of a forward/backward of its own, so
                ``steps`` steps cost ``steps - 1`` gradient computations.
        """
        x = x.detach()
        radius = budget_column(eps, x)
        x32 = x.float()
        low = (x32 - radius).clamp_(min=0.0)
        high = (x32 + radius).clamp_(max=1.0)
        if start is not None:
            x_adv = torch.minimum(torch.maximum(start.detach().float(), low), high)
        elif self.random_start:
            x_adv = torch.minimum(torch.maximum(x32 + (torch.rand_like(x32) * 2 - 1) * radius, low), high)
        else:
            x_adv = x32.clone()
        grad = None if start_grad is None else start_grad.detach()
        with eval_mode(model), torch.enable_grad():
            for _ in range(self.steps):
                if grad is None:
                    x_adv.requires_grad_(True)
                    with autocast_for(x_adv, self.autocast_dtype):
                        logits = model(x_adv)
                    loss = self.loss_fn(logits, y).sum()
                    (grad,) = torch.autograd.grad(loss, x_adv)
                step = grad.sign().nan_to_num_(0.0)
                x_adv = torch.minimum(torch.maximum(x_adv.detach() + self.alpha * step, low), high)
                grad = None
        return x_adv.detach().to(x.dtype)


@ATTACKS.register("pgd", description="L-inf PGD, sign steps, per-sample budgets", paper="Madry et al. 2018")
def pgd_attack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> PGD:
    return PGD(
        steps=options.steps,
        alpha=options.alpha,
        random_start=options.random_start,
        loss=options.loss,
        autocast_dtype=autocast_dtype,
    )
