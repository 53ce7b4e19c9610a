"""One training step, top to bottom: the defense's loss, backward, the optimiser steps, the after-step hooks.

The trainer (:mod:`ades_core.engine.trainer`) calls :func:`training_step` once
per minibatch (once per replay for a replaying defense) and keeps the loop,
the statistics, the logging and the run folder. To follow one step, open:

1. this module, which reads top to bottom;
2. the defense's ``step``: cues -> budgets -> attack -> loss; for PGD-AT,
   Static-DES, ADES, TRADES and MART that is
   :meth:`~ades_core.defenses.budgeted.BudgetedAdversarialTraining.step`
   (``ades_core/defenses/budgeted.py``);
3. for a learnable scheduler, its objective, which runs inside this module's
   backward (:func:`~ades_core.schedulers.objectives.attach_objective`,
   ``ades_core/schedulers/objectives.py``).

Nothing here reads a value on the host: the step's finiteness is a 0-d bool
device tensor (:class:`~ades_core.engine.nonfinite.StepGuard`) that the
trainer reads with its statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ades_core.distributed import DistributedContext, average_gradients
from ades_core.engine.nonfinite import StepGuard
from ades_core.protocols import Defense, StepOutput


def training_step(
    model: nn.Module,
    defense: Defense,
    x: Tensor,
    y: Tensor,
    idx: Tensor,
    *,
    optimizers: Sequence[torch.optim.Optimizer],
    grad_scaler: torch.amp.GradScaler | None,
    guard: StepGuard,
    averaged: list[nn.Parameter],
    dist: DistributedContext | None = None,
) -> tuple[StepOutput, Tensor]:
    """One optimiser update on the defense's loss for the batch ``(x, y, idx)``.

    Args:
        model: what the training forward runs (the model, or its DDP wrapper).
        defense: the training method; it computes the loss and nothing else.
        x: ``(B, C, H, W)`` images in [0, 1]; y: ``(B,)`` labels; idx: ``(B,)``
            dataset indices, on the model's device.
        optimizers: the model's, then the defense's own (a learnable scheduler), if any.
        grad_scaler: the fp16 loss scaler, or ``None``.
        guard: the non-finite guard (``--on-nonfinite``).
        averaged: parameters whose gradients are averaged over ranks here
            (the defense's: DDP averages the model's in backward); empty on
            one process.
        dist: the run's place under ``torchrun`` (``None`` on one process).

    Returns:
        the defense's :class:`StepOutput` and the step's 0-d bool finiteness
        flag; in ``skip`` mode a step that is not finite has been undone.
    """
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    guard.begin()  # in skip mode: copies what an undone step puts back

    # cues -> budgets -> attack -> loss: the defense's step
    out = defense.step(model, x, y, idx)

    # backward: the model's gradients (averaged over ranks by DDP) and the defense's own.
    # A learnable scheduler learns here too: its objective is attached to the budgets eps
    # as tensor hooks that run inside this backward (attach_objective in
    # ades_core/schedulers/objectives.py), or added to the loss as J - J.detach()
    # (the target and lookahead objectives, in the defense's step)
    (out.loss if grad_scaler is None else grad_scaler.scale(out.loss)).backward()
    average_gradients(averaged, dist)
    finite = guard.finite(out.loss)

    # optimiser steps: the model's SGD, then the defense's Adam (through the loss scaler under fp16)
    for optimizer in optimizers:
        if grad_scaler is None:
            optimizer.step()
        else:
            grad_scaler.step(optimizer)
    if grad_scaler is not None:
        grad_scaler.update()

    # after-step hooks: AWP removes its weight perturbation; then the guard keeps the step
    # or undoes it, and the defense commits the state it staged (Free-AT's delta) likewise
    if out.after_update is not None:
        out.after_update()
    guard.commit(finite)
    if out.commit is not None:
        out.commit(finite)
    return out, finite


__all__ = ["training_step"]
