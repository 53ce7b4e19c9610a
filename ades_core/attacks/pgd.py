"""PGD with one budget per sample, in the L-inf or the L2 ball (:mod:`ades_core.norms`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ades_core.attacks.breaking import BreakingRadius
from ades_core.attacks.gradients import loss_input_gradient
from ades_core.attacks.losses import cw_margin
from ades_core.config import AttackOptions
from ades_core.model_mode import ATTACK_BN_MODES, attack_mode, autocast_for
from ades_core.norms import NORMS, step_size
from ades_core.registries import ATTACK_LOSSES, ATTACKS


def budget_column(eps: Tensor | float, x: Tensor) -> Tensor:
    """``eps`` as a float32 ``(B, 1, ..., 1)`` column on ``x``'s device, broadcastable to ``x``.

    Raises:
        ValueError: ``eps`` is a tensor whose shape is neither ``()`` nor ``(B,)``.
    """
    batch = x.shape[0]
    if not isinstance(eps, Tensor):  # a fill on the device, not a host-to-device copy (which syncs on CUDA)
        return torch.full((batch, *([1] * (x.ndim - 1))), float(eps), dtype=torch.float32, device=x.device)
    if eps.ndim == 0:
        eps = eps.expand(batch)
    if eps.shape != (batch,):
        raise ValueError(f"eps must be a float or a (B,) = ({batch},) tensor, got shape {tuple(eps.shape)}")
    return eps.detach().to(device=x.device, dtype=torch.float32).view(batch, *([1] * (x.ndim - 1)))


def keep_most_misclassified(kept: Tensor, worst: Tensor, x_adv: Tensor, margin: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, ``x_adv`` in place of ``kept`` where its CW ``margin`` beats ``worst``.

    ``kept`` and ``x_adv`` ``(B, C, H, W)``; ``worst`` and ``margin`` ``(B,)``,
    ``max_{j != y} z_j - z_y`` (>= 0: misclassified). A NaN margin never wins.
    Returns the new ``(kept, worst)``.
    """
    higher = margin > worst
    column = higher.view(-1, *([1] * (x_adv.ndim - 1)))
    return torch.where(column, x_adv, kept), torch.where(higher, margin, worst)


class PGD:
    """Projected gradient ascent in per-sample norm balls (L-inf: sign steps; L2: normalised steps).

    Each step: ``x <- P(x + alpha_i * d(grad_x loss))`` with ``P`` the
    projection onto sample ``i``'s ball and [0, 1] and ``d`` the norm's
    steepest-ascent direction (:class:`~ades_core.norms.ThreatNorm`):

    * ``linf``: ``d = sign(grad)``, ``P = clip_[lo, hi]`` with
      ``lo = max(x0 - eps_i, 0)``, ``hi = min(x0 + eps_i, 1)`` (exact: the
      intersection of two boxes is a box);
    * ``l2``: ``d = grad / ||grad||_2``; ``P`` rescales ``x - x0`` onto the
      ball of radius ``eps_i`` when it lies outside, then clips to [0, 1]. The
      two projections do not commute, and this order keeps the result in
      both: clipping moves each pixel toward ``x0_j``, which lies in [0, 1],
      so it never lengthens ``x - x0`` (:class:`~ades_core.norms.L2Norm`).

    The projection runs in float32 whatever the autocast dtype of the forward pass, and under
    autocast the input gradient keeps the float32 answer's direction (see
    :mod:`ades_core.attacks.gradients`; without autocast it is the plain
    gradient, bit for bit). The model runs in eval mode during the attack (no
    BN statistic updates, dropout off) and every submodule's mode is restored
    exactly afterwards. Only input
    gradients are computed (``torch.autograd.grad`` w.r.t. the input); parameter
    ``.grad`` is untouched. No host-device synchronisation in the loop.

    Args:
        steps: number of gradient steps (>= 1).
        alpha: step length in the norm's units, pixel space (L-inf: 2/255 in the
            paper; L2: a Euclidean length), or ``None``: ``2.5 * eps_i / steps``
            per sample (:data:`~ades_core.norms.STEP_SCALE`; 2/255 for PGD-10 at 8/255).
        random_start: start from a random point near ``x`` (else from ``x``).
        norm: the threat model, a name in :data:`~ades_core.norms.NORMS` (``linf``, ``l2``).
        start_noise: the random start's distribution: ``uniform``, uniform in
            each sample's ball (L-inf: ``x + eps_i * u`` with ``u ~ U[-1, 1]``,
            Madry et al.; L2: a uniform direction and a radius ``eps_i * U^(1/d)``);
            ``normal``, ``x + normal_std * N(0, 1)``
            whatever the budget (TRADES, Zhang et al. 2019; MART, Wang et al. 2020).
        normal_std: standard deviation of the ``normal`` start (0.001 in TRADES's code).
        loss: a name in ``ATTACK_LOSSES`` (``ce``, ``cw``) or a callable
            ``(logits (B, K), target) -> (B,)`` to maximise; ``target`` is what
            the caller passes as ``y``: labels ``(B,)`` for the registered
            losses, the clean probabilities ``(B, K)`` for
            :func:`~ades_core.attacks.losses.kl_to_target`.
        autocast_dtype: dtype for autocast of the forward pass, or ``None``.
        keep_broken: evaluation mode. A sample counts as broken if *any* iterate
            breaks it (as in AutoAttack), not only the last: of all the iterates
            (the start, every step, and the last one, forwarded once more
            without gradient), each sample keeps the one the model
            misclassified most (largest CW margin ``max_{j != y} z_j - z_y``;
            a tie counts as misclassified), and that iterate is returned when
            its margin is >= 0; the others get the last iterate, bit for bit.
            Needs labels ``y`` ``(B,)`` (the registered ``ce`` / ``cw``
            losses), not target probabilities. Off for training attacks, whose
            result is the last iterate. Costs one forward pass and one
            image-sized buffer more; no host-device sync.
        bn_mode: the model's BatchNorm mode during the attack's passes, ``eval``
            (running statistics) or ``train`` (batch statistics, the model's
            other layers in train mode); running statistics are never updated
            (:func:`~ades_core.model_mode.attack_mode`).
    """

    records_breaking = True  # __call__ takes breaking= (a BreakingRadius shown its iterates)
    START_NOISES = ("uniform", "normal")

    def __init__(
        self,
        *,
        steps: int,
        alpha: float | None,
        random_start: bool = True,
        norm: str = "linf",
        loss: str | Callable[[Tensor, Tensor], Tensor] = "ce",
        autocast_dtype: torch.dtype | None = None,
        start_noise: str = "uniform",
        normal_std: float = 1e-3,
        keep_broken: bool = False,
        bn_mode: str = "eval",
    ) -> None:
        if steps < 1:
            raise ValueError(f"PGD steps must be >= 1, got {steps}")
        if alpha is not None and not alpha > 0:
            raise ValueError(f"PGD step size alpha must be positive (or None: 2.5 * eps / steps), got {alpha}")
        if start_noise not in self.START_NOISES:
            raise ValueError(f"PGD start_noise {start_noise!r} is not one of: {', '.join(self.START_NOISES)}")
        if bn_mode not in ATTACK_BN_MODES:
            raise ValueError(f"PGD bn_mode {bn_mode!r} is not one of: {', '.join(ATTACK_BN_MODES)}")
        if not normal_std >= 0:
            raise ValueError(f"PGD normal_std must be >= 0, got {normal_std}")
        self.steps = steps
        self.alpha = None if alpha is None else float(alpha)
        self.random_start = random_start
        self.norm = NORMS.get(norm)
        self.start_noise = start_noise
        self.normal_std = float(normal_std)
        self.loss = loss
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn = ATTACK_LOSSES.get(loss) if isinstance(loss, str) else loss
        self.autocast_dtype = autocast_dtype
        self.keep_broken = bool(keep_broken)
        self.bn_mode = bn_mode

    def settings(self) -> dict[str, Any]:
        """What an evaluation report records beyond the attack's options."""
        return {"keep_broken": self.keep_broken, "norm": self.norm.name}

    def replace(self, **changes: Any) -> PGD:
        """A copy with some settings changed (``loss=``, ``start_noise=``, ``steps=``, ...)."""
        settings = {
            "steps": self.steps,
            "alpha": self.alpha,
            "random_start": self.random_start,
            "norm": self.norm.name,
            "loss": self.loss,
            "autocast_dtype": self.autocast_dtype,
            "start_noise": self.start_noise,
            "normal_std": self.normal_std,
            "keep_broken": self.keep_broken,
            "bn_mode": self.bn_mode,
        }
        unknown = sorted(set(changes) - set(settings))
        if unknown:
            raise TypeError(f"PGD has no setting(s) {', '.join(unknown)}; settings: {', '.join(settings)}")
        return type(self)(**(settings | changes))

    def draw_start(self, x: Tensor, radius: Tensor | float) -> Tensor:
        """The random start for ``x`` ``(B, C, H, W)``, clipped to [0, 1] (not yet into the ball).

        ``uniform``: uniform in the norm's ball of ``radius`` (a float or a
        column broadcastable to ``x``; :meth:`~ades_core.norms.ThreatNorm.uniform_start`);
        ``normal``: ``x + normal_std * N(0, 1)``, ``radius`` unused. Clipping
        keeps a point of the ball in it (``x`` lies in [0, 1]).
        """
        if self.start_noise == "normal":
            noisy = x + self.normal_std * torch.randn_like(x)
        else:
            noisy = self.norm.uniform_start(x, radius)
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
        breaking: BreakingRadius | None = None,
    ) -> Tensor:
        """``x`` ``(B, C, H, W)`` in [0, 1], ``y`` ``(B,)``, ``eps`` ``(B,)`` or float -> ``x_adv``.

        ``y`` is handed to the loss as its second argument: labels for the
        registered losses, target probabilities ``(B, K)`` for ``kl_to_target``
        (labels only with ``keep_broken``).

        Args:
            start: a starting point ``(B, C, H, W)`` instead of the random start
                (it is projected into each ball and the box first).
            start_grad: the gradient of the attack loss at ``start``, already
                computed by the caller (for example while extracting cues); the
                first step uses it instead of a forward/backward of its own, so
                ``steps`` steps cost ``steps - 1`` gradient computations.
            breaking: a :class:`~ades_core.attacks.breaking.BreakingRadius` shown
                every iterate whose logits the attack computes (the start,
                unless ``start_grad`` is given, and every step before the
                last), in order. The caller shows it the iterates the attack
                does not forward (the start with ``start_grad``, the returned
                ``x_adv``). It changes nothing about the attack: ``x_adv`` is
                the same, bit for bit.

        Raises:
            ValueError: ``keep_broken`` and ``y`` is not a ``(B,)`` label vector.
        """
        if self.keep_broken and y.shape != x.shape[:1]:
            raise ValueError(
                f"PGD keep_broken needs labels y of shape ({x.shape[0]},), got {tuple(y.shape)}: "
                "it tells a misclassified iterate by the true class"
            )
        x = x.detach()
        radius = budget_column(eps, x)
        x32 = x.float()
        project = self.norm.projector(x32, radius)
        alpha = step_size(self.alpha, radius, self.steps)
        if start is not None:
            x_adv = project(start.detach().float())
        elif self.random_start:
            x_adv = project(self.draw_start(x32, radius))
        else:
            x_adv = x32.clone()
        grad = None if start_grad is None else start_grad.detach()
        if self.keep_broken:
            kept = x_adv.clone()  # per sample, the most misclassified iterate forwarded so far
            worst = torch.full((x.shape[0],), -torch.inf, device=x.device)  # its CW margin
        with attack_mode(model, self.bn_mode):
            for _ in range(self.steps):
                if grad is None:
                    grad, logits = loss_input_gradient(
                        model, x_adv, y, self.loss_fn, autocast_dtype=self.autocast_dtype
                    )
                    if self.keep_broken:
                        kept, worst = keep_most_misclassified(kept, worst, x_adv, cw_margin(logits, y))
                    if breaking is not None:
                        breaking.observe(x_adv, logits)
                x_adv = project(x_adv.detach() + alpha * self.norm.ascent_direction(grad))
                grad = None
            if self.keep_broken:
                with torch.no_grad(), autocast_for(x_adv, self.autocast_dtype):
                    margin = cw_margin(model(x_adv).float(), y)
                kept, worst = keep_most_misclassified(kept, worst, x_adv, margin)
                x_adv = torch.where((worst >= 0).view_as(radius), kept, x_adv)
        return x_adv.detach().to(x.dtype)


@ATTACKS.register(
    "pgd", description="PGD, per-sample budgets: L-inf sign steps or L2 normalised steps", paper="Madry et al. 2018",
    norms=("linf", "l2"),
)
def pgd_attack(options: AttackOptions, *, autocast_dtype: torch.dtype | None = None) -> PGD:
    return PGD(
        steps=options.steps,
        alpha=options.alpha,
        random_start=options.random_start,
        norm=options.norm,
        loss=options.loss,
        autocast_dtype=autocast_dtype,
        keep_broken=options.keep_broken,
        bn_mode=options.bn,
    )
