"""How a learnable scheduler is trained: the objective on its budgets.

All objectives here use the envelope-theorem gradient of the paper (Eq. 8-10):
for ``L_i(eps_i) = CE(f(x_i + delta_i*), y_i)`` with ``delta_i*`` the attack's
maximiser in the ball ``|delta|_inf <= eps_i``,
``dL_i/d eps_i = sum_j |dL_i/dx_j|`` over the pixels ``j`` where the ball's
constraint is active (``|delta_ij| = eps_i``), i.e. the L1 norm of the
adversarial input gradient on the active set (see
:func:`ades_core.defenses.budgeted.envelope_input`). The scheduler's gradient is
``w_i * dL_i/d eps_i * d eps_i / d theta``, where the objective chooses the
per-sample weight ``w_i`` and the allocation of the budget (``free`` or
``mean``: batch mean held exactly at ``eps_min + lam / 2``).

Registered objectives (read docs/method.md and ../shared/guides/SCHEDULER.md):

* ``paper``: minimise the adversarial loss, free allocation, as the paper
  writes it. ``dL/d eps >= 0`` for almost every sample, so every budget
  shrinks to ``eps_min``: the run warns when mean sigma saturates.
* ``allocate-max``: the mean budget is fixed; the scheduler moves budget to
  the samples whose adversarial loss grows fastest with eps (maximises the
  adversarial loss at a fixed mean budget).
* ``allocate-min``: the mean budget is fixed; the scheduler moves budget to
  the samples whose loss grows slowest (the more robust ones), the direction
  that IAAT and MMA take.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
from torch import Tensor

from ades_core.registries import SCHEDULER_OBJECTIVES


@runtime_checkable
class SchedulerObjective(Protocol):
    """Contract: ``allocation`` is ``free`` or ``mean``; ``eps_grad_weight(loss)``
    maps the detached per-sample adversarial losses ``(B,)`` to the weight
    ``(B,)`` (or a float) that multiplies each ``dL/d eps_i`` before it reaches
    the scheduler, whose optimiser then *descends*."""

    allocation: str

    def eps_grad_weight(self, per_sample_loss: Tensor) -> Tensor | float: ...


@attrs.frozen
class SignedEnvelope:
    """``w_i = sign``: +1 descends the adversarial loss, -1 ascends it."""

    allocation: str
    sign: float

    def eps_grad_weight(self, per_sample_loss: Tensor) -> float:
        return self.sign


SCHEDULER_OBJECTIVES.register(
    "paper",
    lambda: SignedEnvelope("free", +1.0),
    description="minimise the adversarial loss (the paper's Eq. 8-10); collapses to eps_min",
    paper="ADES paper, Eq. 8-10",
)
SCHEDULER_OBJECTIVES.register(
    "allocate-max",
    lambda: SignedEnvelope("mean", -1.0),
    description="fixed mean budget; more budget where the adversarial loss grows fastest",
)
SCHEDULER_OBJECTIVES.register(
    "allocate-min",
    lambda: SignedEnvelope("mean", +1.0),
    description="fixed mean budget; more budget where the loss grows slowest (IAAT/MMA direction)",
)
