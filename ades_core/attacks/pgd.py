"""L-inf PGD with one budget per sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        random_start: start from a random point near ``x`` (else from ``x``).
        start_noise: the random start's distribution: ``uniform``, ``x + eps_i * u``
            with ``u ~ U[-1, 1]`` (Madry et al.); ``normal``, ``x + normal_std * N(0, 1)``
            whatever the budget (TRADES, Zhang et al. 2019; MART, Wang et al. 2020).
        normal_std: standard deviation of the ``normal`` start (0.001 in TRADES's code).
        loss: a name in ``ATTACK_LOSSES`` (``ce``, ``cw``) or a callable
            ``(logits (B, K), target) -> (B,)`` to maximise; ``target`` is what
            the caller passes as ``y``: labels ``(B,)`` for the registered
            losses, the clean probabilities ``(B, K)`` for
            :func:`~ades_core.attacks.losses.kl_to_target`.
        autocast_dtype: dtype for autocast of the forward pass, or ``None``.
    """

    accepts_start = True  # __call__ takes start= and start_grad= (shared cue computation)
    START_NOISES = ("uniform", "normal")

    def __init__(
        self,
        *,
        steps: int,
        alpha: float,
        random_start: bool = True,
        loss: str | Callable[[Tensor, Tensor], Tensor] = "ce",
        autocast_dtype: torch.dtype | None = None,
        start_noise: str = "uniform",
        normal_std: float = 1e-3,
    ) -> None:
        if steps < 1:
            raise ValueError(f"PGD steps must be >= 1, got {steps}")
        if not alpha > 0:
            raise ValueError(f"PGD step size alpha must be positive, got {alpha}")
        if start_noise not in self.START_NOISES:
            raise ValueError(f"PGD start_noise {start_noise!r} is not one of: {', '.join(self.START_NOISES)}")
        if not normal_std >= 0:
            raise ValueError(f"PGD normal_std must be >= 0, got {normal_std}")
        self.steps = steps
        self.alpha = float(alpha)
        self.random_start = random_start
        self.start_noise = start_noise
        self.normal_std = float(normal_std)
        self.loss = loss
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn = ATTACK_LOSSES.get(loss) if isinstance(loss, str) else loss
        self.autocast_dtype = autocast_dtype

    def replace(self, **changes: Any) -> PGD:
        """A copy with some settings changed (``loss=``, ``start_noise=``, ``steps=``, ...)."""
        settings = {
            "steps": self.steps,
            "alpha": self.alpha,
            "random_start": self.random_start,
            "loss": self.loss,
            "autocast_dtype": self.autocast_dtype,
            "start_noise": self.start_noise,
            "normal_std": self.normal_std,
        }
        unknown = sorted(set(changes) - set(settings))
        if unknown:
            raise TypeError(f"PGD has no setting(s) {', '.join(unknown)}; settings: {', '.join(settings)}")
        return type(self)(**(settings | changes))

    def draw_start(self, x: Tensor, radius: Tensor | float) -> Tensor:
        """The random start for ``x`` ``(B, C, H, W)``, clipped to [0, 1] (not yet into the ball).

        ``uniform``: ``x + radius * u``, ``u ~ U[-1, 1]``, inside the ball of
        ``radius`` (a float or a column broadcastable to ``x``); ``normal``:
        ``x + normal_std * N(0, 1)``, ``radius`` unused.
        """
        if self.start_noise == "normal":
            noisy = x + self.normal_std * torch.randn_like(x)
        else:
            noisy = x + (torch.rand_like(x) * 2 - 1) * radius
        return noisy.clamp_(0.0, 1.0)

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

        ``y`` is handed to the loss as its second argument: labels for the
        registered losses, target probabilities ``(B, K)`` for ``kl_to_target``.

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
            x_adv = torch.minimum(torch.maximum(self.draw_start(x32, radius), low), high)
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
