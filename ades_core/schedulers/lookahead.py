"""The ``lookahead`` objective: score the budgets by what one training step on them does.

Learning-to-reweight and LAS-AT judge a choice made for a training batch by
the model it produces. Here, every ``every`` steps:

1. the defense keeps the batch it trained on (its images, the attack's
   ``x_adv`` and the cues, all detached): the *virtual* batch;
2. on the next step, the scheduler maps the kept cues to budgets ``eps(w)``
   again (with its graph), and the model takes one *virtual* SGD step on the
   virtual batch's outer loss at the envelope input
   (:func:`~ades_core.defenses.budgeted.envelope_input`, so the loss depends
   on ``eps(w)`` as the envelope theorem gives it):
   ``theta' = theta - lr_v * grad_theta L(theta; eps(w))``, with the gradient
   kept in the graph (``create_graph``), through
   ``torch.func.functional_call``; ``theta`` itself is detached, so nothing
   reaches the model's own gradient;
3. the stepped model is scored on the *new* batch, which the model has not
   trained on: ``J = CE(f_theta'(x)) + CE(f_theta'(x_adv))`` (clean and
   robust loss, the new batch's ``x_adv`` as the training attack made it);
4. ``J`` enters the training loss as ``J - J.detach()`` (zero in value), so
   the same backward gives the scheduler ``dJ/dw`` (a second-order term
   through ``theta'``) and the model nothing.

The allocation is ``mean`` (:func:`~ades_core.schedulers.mlp.centre_sigma`):
the batch mean budget is held exactly; only who gets more is learned. The
virtual step's batch statistics (BatchNorm) are taken on copies of the
buffers, so the model's running statistics are not touched. The cost: per
look-ahead, one forward and a double backward on the virtual batch and two
forwards on the new one, i.e. about 3 to 4 training forward/backward passes
without the attack, every ``every`` steps (measured in docs/scheduler.md).
A kept batch does not survive ``--resume`` (the next due step keeps another).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ades_core.config import BudgetConfig, SchedulerOptions
from ades_core.protocols import Cues
from ades_core.registries import SCHEDULER_OBJECTIVES

LOOKAHEAD_LR = 1e-2
"""The ``lookahead`` objective's Adam learning rate when ``--scheduler-lr`` is not given."""


@attrs.frozen(kw_only=True)
class VirtualBatch:
    """A training batch kept for the next look-ahead: images, adversarial images, labels and cues
    (``(B, C, H, W)``, ``(B, C, H, W)``, ``(B,)``, ``Cues``), all detached."""

    x: Tensor
    x_adv: Tensor
    y: Tensor
    cues: Cues


def stepped_parameters(
    model: nn.Module, loss_of: Callable[[Mapping[str, Tensor]], Tensor], lr: float
) -> dict[str, Tensor]:
    """``theta' = theta - lr * grad loss_of(theta)`` for every trainable parameter, the gradient kept
    in the graph so that ``theta'`` depends on whatever ``loss_of`` depends on besides ``theta``.

    ``theta`` enters detached (fresh leaves sharing the parameters' storage),
    so a backward through ``theta'`` never reaches ``model``'s own ``.grad``.
    Frozen parameters are passed through unchanged.
    """
    params = {name: p.detach().requires_grad_(p.requires_grad) for name, p in model.named_parameters()}
    trainable = [name for name, p in params.items() if p.requires_grad]
    value = loss_of(params)
    grads = torch.autograd.grad(value, [params[n] for n in trainable], create_graph=True, allow_unused=True)
    stepped = dict(params)
    for name, grad in zip(trainable, grads):
        if grad is not None:
            stepped[name] = params[name] - lr * grad
    return stepped


def call_with(model: nn.Module, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """``model(x)`` with ``params`` in place of its parameters and copies of its buffers
    (so BatchNorm in train mode does not update the model's running statistics)."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    return functional_call(model, {**params, **buffers}, (x,))


@attrs.frozen
class LookAhead:
    """The look-ahead objective (see the module docstring).

    Args:
        every: a look-ahead every this many steps (``>= 1``; the batch of
            step ``k * every`` is kept and scored on the step after it).
        virtual_lr: the virtual SGD step's learning rate (``> 0``).
    """

    every: int = attrs.field(default=4)
    virtual_lr: float = attrs.field(default=0.1)
    allocation: str = "mean"

    def __attrs_post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"the look-ahead interval must be >= 1 step, got {self.every}")
        if not self.virtual_lr > 0:
            raise ValueError(f"the look-ahead's virtual learning rate must be > 0, got {self.virtual_lr}")

    def eps_grad(self, grad: Tensor, eps: Tensor, per_sample_loss: Tensor) -> Tensor:
        """Zero: this objective learns from :meth:`score`, not from ``dL/d eps``."""
        return torch.zeros_like(grad)

    def keeps(self, step: int) -> bool:
        """Whether the batch of training step ``step`` (0-based) is kept for a look-ahead."""
        return step % self.every == 0

    def score(
        self,
        model: nn.Module,
        virtual_loss: Callable[[Mapping[str, Tensor]], Tensor],
        x: Tensor,
        x_adv: Tensor,
        y: Tensor,
    ) -> Tensor:
        """``J`` (0-d): the clean plus robust CE on ``(x, x_adv, y)`` of the model after one virtual
        step on ``virtual_loss`` (a function of the parameters that carries the budgets' graph)."""
        stepped = stepped_parameters(model, virtual_loss, self.virtual_lr)
        clean = F.cross_entropy(call_with(model, stepped, x).float(), y)
        robust = F.cross_entropy(call_with(model, stepped, x_adv).float(), y)
        return clean + robust


def _lookahead(options: SchedulerOptions, *, budget: BudgetConfig) -> LookAhead:
    return LookAhead(every=options.lookahead_every, virtual_lr=options.lookahead_lr)


SCHEDULER_OBJECTIVES.register(
    "lookahead",
    _lookahead,
    description="fixed mean budget; budgets scored by the clean and robust loss, on the next batch, "
    "of the model after one virtual step on them (every k steps)",
    paper="after learning-to-reweight and LAS-AT's look-ahead reward; see docs/scheduler.md",
    lr=LOOKAHEAD_LR,
)
