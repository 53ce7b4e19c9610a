"""Free-AT: "Adversarial training for free!" (Shafahi, Najibi, Ghiasi, Xu, Dickerson, Studer,
Davis, Taylor, Goldstein, NeurIPS 2019).

Each minibatch is replayed ``m`` times (``replays``). Every replay is one
forward/backward on ``clip(x + delta, 0, 1)`` whose backward gives both the
model's gradient (the trainer steps the optimiser after each replay) and the
gradient ``g`` w.r.t. ``delta``; then::

    delta <- clip(delta + eps * sign(g), -eps, eps)

The perturbation ``delta`` is carried from replay to replay *and* from one
minibatch to the next (it is never reset): a buffer of the batch's shape
``(B, C, H, W)``; a smaller (last) batch uses and updates its first rows.
The step size is ``eps``, as in the paper's Algorithm 1. To keep the cost of
an ordinary ``epochs``-epoch run, the builder divides the epochs by ``m``:
``ceil(epochs / m)`` passes over the data (``--epochs 100 --replays 8``: 13),
with the LR milestones at the same fractions of those passes.

How it fits the trainer: :meth:`FreeAdversarialTraining.step` makes
``delta`` a leaf that requires grad; the trainer's ``loss.backward()`` fills
its ``.grad``, and the ``commit`` callback (run once the optimisers have
stepped and the non-finite guard has kept or undone the step) moves the
buffer, for a kept step only: ``torch.where(kept, moved, before)``, no host
read. The step itself never writes the buffer (a buffer that must grow to a
larger batch is grown on a copy and put in place by the commit), so a step
skipped under ``--on-nonfinite skip`` leaves every row of ``delta`` as it was
(a buffer grown for that batch holds zeros in its new rows). So
one replay costs exactly one forward and one backward. A non-finite input
gradient contributes no step. Under fp16 loss scaling the gradient is
scaled, which leaves its sign unchanged.

``delta`` is in ``state_dict`` (checkpoints carry it, so a resumed run goes
on with it); it follows the position in the batch, not the sample, as in the
authors' code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ades_core.model_mode import autocast_for
from ades_core.protocols import Budget, StepOutput


class FreeAdversarialTraining(nn.Module):
    """Free-AT (see the module docstring).

    Args:
        eps: the L-inf budget (and FGSM step), [0, 1] pixel scale.
        replays: ``m``, the trainer calls :meth:`step` this many times per minibatch.
        autocast_dtype: dtype of autocast for the forward pass, or ``None``.
    """

    def __init__(self, *, eps: float, replays: int, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if replays < 1:
            raise ValueError(f"free-at replays must be >= 1, got {replays}")
        self.name = "free-at"
        self.eps = float(eps)
        self.replays = int(replays)
        self.autocast_dtype = autocast_dtype
        self.register_buffer("delta", torch.zeros(0))
        self.register_load_state_dict_pre_hook(self._fit_delta_to)

    def _fit_delta_to(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Before loading: give ``delta`` the saved shape (it takes the batch's shape when first used)."""
        saved = state_dict.get(prefix + "delta")
        if isinstance(saved, Tensor) and saved.shape != self.delta.shape:
            self.delta = torch.zeros(saved.shape, dtype=saved.dtype, device=self.delta.device)

    def _carried(self, x: Tensor) -> Tensor:
        """The buffer as batch ``x`` ``(B, C, H, W)`` needs it, without replacing it: ``delta``
        itself, or a new tensor: ``delta`` grown with zero rows to ``B`` rows, or zeros
        ``(B, C, H, W)`` for a new image shape (the first batch)."""
        batch, shape = x.shape[0], tuple(x.shape[1:])
        if tuple(self.delta.shape[1:]) != shape or self.delta.ndim != x.ndim:
            return torch.zeros((batch, *shape), device=x.device)
        if self.delta.shape[0] < batch:
            grown = torch.zeros((batch, *shape), dtype=self.delta.dtype, device=self.delta.device)
            grown[: self.delta.shape[0]] = self.delta
            return grown
        return self.delta

    def delta_for(self, x: Tensor) -> Tensor:
        """The carried perturbation for ``x`` ``(B, C, H, W)``: the buffer's first ``B`` rows
        (zeros for rows it does not hold yet; the buffer grows, with zeros, to the largest
        batch a kept step has seen; a new image shape starts from zeros)."""
        return self._carried(x)[: x.shape[0]]

    def step(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        """One replay: CE on ``clip(x + delta, 0, 1)``; ``commit(kept)`` moves ``delta`` if the
        step is kept. ``model`` may be a DDP wrapper (the one forward goes through it)."""
        batch = x.shape[0]
        carried = self._carried(x)
        delta = carried[:batch].detach().clone().requires_grad_(True)
        with autocast_for(x, self.autocast_dtype):
            logits = model((x + delta).clamp(0.0, 1.0)).float()
        loss = F.cross_entropy(logits, y)

        def commit_delta(kept: Tensor) -> None:
            """``kept``: 0-d bool; the buffer's first ``B`` rows move only when it is True."""
            grad = delta.grad
            if grad is None:
                return
            direction = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad)).sign()
            with torch.no_grad():
                moved = (delta.detach() + self.eps * direction).clamp(-self.eps, self.eps)
                rows = torch.where(kept.to(moved.device), moved, carried[:batch])
                carried[:batch] = rows  # the buffer itself, or its grown copy ...
                if carried is not self.delta:
                    self.delta = carried  # ... which becomes the buffer (the same values if not kept)

        return StepOutput(
            loss=loss,
            logits_adv=logits.detach(),
            budget=Budget(
                eps=torch.full((batch,), self.eps, device=x.device), eps_min=self.eps, eps_max=self.eps
            ),
            commit=commit_delta,
        )


def free_at_defense(parts) -> FreeAdversarialTraining:
    """``DEFENSES`` factory: Free-AT at ``parts.budget.eps`` with ``parts.options.replays`` replays."""
    return FreeAdversarialTraining(
        eps=parts.budget.eps, replays=parts.options.replays, autocast_dtype=parts.autocast_dtype
    )


__all__ = ["FreeAdversarialTraining", "free_at_defense"]
