"""Threat models: what a budget ``eps`` means, the ball it spans, and how an attack moves in it.

Two norms are registered in :data:`NORMS` (name -> :class:`ThreatNorm`):

============  =================================================================
``linf``      ``||delta||_inf <= eps``, ``eps`` in [0, 1] pixel scale
              (``8/255 = 0.0314``); sign steps (Madry et al. 2018)
``l2``        ``||delta||_2 <= eps``, ``eps`` a Euclidean radius in pixel space
              (RobustBench's CIFAR-10 L2 leaderboard: ``0.5``); steps along the
              normalised gradient
============  =================================================================

Every tensor is ``(B, C, H, W)`` in [0, 1] pixel scale (normalisation lives
inside the model) and every radius a float32 column ``(B, 1, ..., 1)`` that
broadcasts to it (:func:`~ades_core.attacks.pgd.budget_column`). Each method
queues device operations only: no host-device synchronisation, so attacks
can call them inside their loops.

The largest meaningful budget: an L-inf radius of 1 already holds the whole
[0, 1] box; the L2 diameter of the box of ``d = C * H * W`` pixels is
``sqrt(d)`` (55.4 for CIFAR's 3 x 32 x 32), so no L2 budget above it
changes anything (:meth:`ThreatNorm.diameter`).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor

from ades_core.registry import Registry

NORMS: Registry = Registry("norm")
"""name -> :class:`ThreatNorm` (the object itself, not a factory): ``linf`` and ``l2``."""

STEP_SCALE = 2.5
"""The relative step size of an attack with no absolute ``alpha``: ``2.5 * eps_i / steps`` per sample
(Madry et al.'s rule, reaching the boundary from the centre with room to move along it)."""


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` as a column ``(B, 1, ..., 1)`` broadcastable to ``like``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


class ThreatNorm:
    """One threat model: a norm ball of radius ``eps_i`` around each sample, intersected with [0, 1].

    Attributes:
        name: the registry name (``linf``, ``l2``), written to ``config.json`` and ``eval.json``.
        label: how tables print it (``L-inf``, ``L2``).
        official: the name the official AutoAttack and RobustBench use (``Linf``, ``L2``).
        units: one phrase: what a budget of this norm is, with an example.
    """

    name: str
    label: str
    official: str
    units: str

    # ---------------------------------------------------------------- budgets
    def diameter(self, dims: int) -> float:
        """The largest distance between two images of ``dims`` pixels: no budget above it matters."""
        raise NotImplementedError

    def budget_limit(self) -> float:
        """The largest budget a config accepts without knowing the image size (``inf``: none)."""
        raise NotImplementedError

    def check_budget(self, value: float, text: object = None) -> float:
        """``value`` if it is a budget of this norm, else ``ValueError`` in one line.

        ``text``: how the user wrote it (``"300/255"``), for the message.
        """
        shown = repr(text) if text is not None else f"{value:g}"
        limit = self.budget_limit()
        if not math.isfinite(value) or not 0.0 <= value <= limit:
            upper = "inf)" if math.isinf(limit) else f"{limit:g}]"
            raise ValueError(f"budget {shown} is outside [0, {upper} ({self.units})")
        return value

    def format(self, eps: float) -> str:
        """A budget as tables print it (``8/255`` for L-inf, ``0.5`` for L2)."""
        return f"{eps:.4g}"

    def large_budget(self, dims: int) -> float:
        """The budget of the gradient-masking ``large-eps`` check for images of ``dims`` pixels:
        one no model resists (accuracy there must be near zero)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- geometry
    def distance(self, delta: Tensor) -> Tensor:
        """``(B,)`` float32: each sample's norm of ``delta`` ``(B, C, H, W)``."""
        raise NotImplementedError

    def projector(self, x: Tensor, radius: Tensor):
        """A function ``z -> z'`` onto each sample's ball of ``radius`` around ``x`` *and* [0, 1].

        ``x`` float32 ``(B, C, H, W)`` in [0, 1]; ``radius`` a float32 column.
        Precomputes what the projection reuses at every step.
        """
        raise NotImplementedError

    def ascent_direction(self, grad: Tensor) -> Tensor:
        """The unit-norm step direction of steepest ascent for ``grad`` ``(B, C, H, W)``.

        A sample whose gradient is zero or not finite gets a zero step.
        Depends only on the direction of each sample's gradient, so a positive
        per-sample rescaling (autocast, :mod:`ades_core.attacks.gradients`) changes nothing.
        """
        raise NotImplementedError

    def uniform_start(self, x: Tensor, radius: Tensor | float) -> Tensor:
        """``x`` plus noise uniform in each sample's ball (not yet clipped to [0, 1])."""
        raise NotImplementedError

    def envelope_direction(self, delta: Tensor, held: Tensor, radius: Tensor) -> Tensor:
        """``d x_adv / d eps_i`` for the envelope-theorem gradient (see :func:`~ades_core.defenses.budgeted.envelope_input`).

        Args:
            delta: ``x_adv - x`` ``(B, C, H, W)``, detached.
            held: bool, the pixels the [0, 1] box holds (at a bound, pushed beyond it).
            radius: the budgets as a column; positive (the caller zeroes ``eps_i = 0``).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"ThreatNorm({self.name!r})"


class LinfNorm(ThreatNorm):
    """``||delta||_inf <= eps_i``: the box ``[x - eps_i, x + eps_i]`` clipped to [0, 1]; sign steps."""

    name = "linf"
    label = "L-inf"
    official = "Linf"
    units = "L-inf pixel scale: 8/255 = 0.0314"
    LARGE = 64 / 255

    def diameter(self, dims: int) -> float:
        return 1.0

    def budget_limit(self) -> float:
        return 1.0

    def format(self, eps: float) -> str:
        """``8/255`` when ``eps`` is a whole (or half) number of 1/255 steps, else ``0.0314``."""
        steps = Fraction(eps * 255).limit_denominator(2)
        if abs(float(steps) - eps * 255) < 1e-6:
            return f"{float(steps):g}/255"
        return f"{eps:.4g}"

    def large_budget(self, dims: int) -> float:
        """64/255: eight times the usual 8/255, whatever the image size."""
        return self.LARGE

    def distance(self, delta: Tensor) -> Tensor:
        return delta.detach().float().abs().flatten(1).amax(dim=1)

    def projector(self, x: Tensor, radius: Tensor):
        """``min(max(z, max(x - eps_i, 0)), min(x + eps_i, 1))``: the two boxes intersect in a box, so
        clipping to it is the exact Euclidean projection onto ball and box at once."""
        low = (x - radius).clamp_(min=0.0)
        high = (x + radius).clamp_(max=1.0)
        return lambda z: torch.minimum(torch.maximum(z, low), high)

    def ascent_direction(self, grad: Tensor) -> Tensor:
        """``sign(grad)`` (NaN -> 0): the L-inf steepest-ascent direction."""
        return grad.sign().nan_to_num_(0.0)

    def uniform_start(self, x: Tensor, radius: Tensor | float) -> Tensor:
        """``x + eps_i * u``, ``u ~ U[-1, 1]`` per pixel: uniform in the L-inf ball."""
        return x + (torch.rand_like(x) * 2 - 1) * radius

    def envelope_direction(self, delta: Tensor, held: Tensor, radius: Tensor) -> Tensor:
        """``delta / eps_i`` on the pixels the box does not hold, 0 on the held ones.

        At an exact maximiser every free pixel with a non-zero gradient sits at
        ``|delta_j| = eps_i`` and grows one for one with ``eps_i``; so
        ``dL/d eps_i = <grad, delta / eps_i>`` is the L1 (dual) norm of the
        gradient on those pixels.
        """
        return torch.where(held, torch.zeros_like(delta), delta / radius)


class L2Norm(ThreatNorm):
    """``||delta||_2 <= eps_i``: a Euclidean ball around each sample, intersected with [0, 1].

    **Projection onto ball and box.** The Euclidean projection onto the
    intersection of the two convex sets is not the composition of the two
    projections in general (they do not commute), and computing it exactly
    needs an iteration (Dykstra's). ades projects onto the ball first and
    clips to the box second: ``z' = clip_[0,1](x + delta * min(1, eps_i / ||delta||_2))``.
    The result lies in both sets: the box because it is clipped last, and the
    ball because ``x`` lies in the box, so clipping moves each pixel toward
    ``x_j`` and never increases ``|z_j - x_j|``; hence
    ``||z' - x||_2 <= ||delta * min(1, eps_i / ||delta||)||_2 <= eps_i``. It is
    a feasible point close to the projection (equal to it whenever the clip
    changes nothing), which is what PGD needs: every iterate is admissible.
    """

    name = "l2"
    label = "L2"
    official = "L2"
    units = "L2: a Euclidean radius in pixel space, e.g. 0.5"
    LARGE_LINF = 64 / 255

    def diameter(self, dims: int) -> float:
        return math.sqrt(dims)

    def budget_limit(self) -> float:
        """No limit without the image size (the builder checks ``<= sqrt(C * H * W)``)."""
        return math.inf

    def format(self, eps: float) -> str:
        return f"{eps:.4g}"

    def large_budget(self, dims: int) -> float:
        """``64/255 * sqrt(d)`` (13.9 for CIFAR): the smallest L2 ball that holds the L-inf ball of
        64/255, the L-inf check's budget; so an attack that finds nothing there also misses every
        point of that L-inf ball."""
        return self.LARGE_LINF * math.sqrt(dims)

    def distance(self, delta: Tensor) -> Tensor:
        return delta.detach().float().flatten(1).norm(p=2, dim=1)

    def projector(self, x: Tensor, radius: Tensor):
        """Onto the ball, then clipped to the box; the result is in both (see the class docstring)."""

        def project(z: Tensor) -> Tensor:
            delta = z - x
            length = _per_sample(delta.flatten(1).norm(p=2, dim=1), delta)
            shrink = torch.where(length > radius, radius / length.clamp(min=1e-30), torch.ones_like(length))
            return (x + delta * shrink).clamp_(0.0, 1.0)

        return project

    def ascent_direction(self, grad: Tensor) -> Tensor:
        """``grad / ||grad||_2`` per sample, in float32; a zero or non-finite gradient gives 0."""
        grad = grad.float()
        length = _per_sample(grad.flatten(1).norm(p=2, dim=1), grad)
        usable = torch.isfinite(length) & (length > 0)
        return torch.where(usable, grad / torch.where(usable, length, torch.ones_like(length)), torch.zeros_like(grad))

    def uniform_start(self, x: Tensor, radius: Tensor | float) -> Tensor:
        """``x + eps_i * r * v``: ``v`` a uniform direction (a normalised Gaussian) and
        ``r = U^(1/d)``, so the point is uniform in the ``d``-dimensional ball (most of its
        volume lies near the surface when ``d`` is large)."""
        noise = torch.randn_like(x, dtype=torch.float32)
        length = _per_sample(noise.flatten(1).norm(p=2, dim=1), noise).clamp(min=1e-30)
        dims = x[0].numel()
        scale = _per_sample(torch.rand(x.shape[0], device=x.device).pow(1.0 / dims), noise)
        return x + noise / length * scale * radius

    def envelope_direction(self, delta: Tensor, held: Tensor, radius: Tensor) -> Tensor:
        """``delta_F * eps_i / max(eps_i^2 - ||delta_H||^2, ||delta_F||^2)`` on the free pixels ``F``, 0 on
        the held ones ``H``.

        Derivation. ``V(eps) = max L(x + delta)`` over ``||delta||_2 <= eps`` and
        the box. With the held pixels fixed, the constraint stays active as
        eps grows: ``||delta_F||^2 + ||delta_H||^2 = eps^2``, so
        ``<delta_F, d delta_F / d eps> = eps``. At the maximiser (KKT) the free
        part of the gradient is parallel to the free part of delta,
        ``g_F = mu * delta_F / eps`` with ``mu`` the multiplier of the ball,
        so ``dV/d eps = <g_F, d delta_F / d eps> = mu = eps * ||g_F||_2 / ||delta_F||_2``:
        the L2 (dual) norm of the input gradient on the free pixels, times
        ``eps / ||delta_F|| >= 1``, and exactly ``||g||_2`` when the box holds
        nothing. The direction above gives ``<g, direction> = mu`` there. On
        the boundary ``eps^2 - ||delta_H||^2 = ||delta_F||^2``; the ``max``
        keeps the direction finite when float rounding or a truncated attack
        puts ``delta`` inside the ball, where (with nothing held) it is
        ``delta / eps``, the L-inf convention.
        """
        free = torch.where(held, torch.zeros_like(delta), delta)
        held_part = torch.where(held, delta, torch.zeros_like(delta))
        free_sq = _per_sample(free.flatten(1).pow(2).sum(dim=1), delta)
        held_sq = _per_sample(held_part.flatten(1).pow(2).sum(dim=1), delta)
        denominator = torch.maximum(radius * radius - held_sq, free_sq)
        usable = denominator > 0
        return torch.where(usable, free * radius / torch.where(usable, denominator, torch.ones_like(denominator)),
                           torch.zeros_like(delta))


LINF = LinfNorm()
L2 = L2Norm()
NORMS.register("linf", LINF, description="||delta||_inf <= eps, [0, 1] pixel scale (8/255)", paper="Madry et al. 2018")
NORMS.register("l2", L2, description="||delta||_2 <= eps, a Euclidean radius in pixel space (0.5)",
               paper="Madry et al. 2018; Croce & Hein 2020")


def get_norm(name: str) -> ThreatNorm:
    """The :class:`ThreatNorm` called ``name``; a ``RegistryError`` listing the known ones otherwise."""
    return NORMS.get(name)


def step_size(alpha: float | None, radius: Tensor, steps: int) -> Tensor | float:
    """An attack's step: the absolute ``alpha`` (a float), or, for ``None``, ``STEP_SCALE * eps_i / steps``
    per sample (a column like ``radius``)."""
    return float(alpha) if alpha is not None else radius * (STEP_SCALE / steps)
