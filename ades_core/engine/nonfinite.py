"""The non-finite guard: a NaN or Inf loss or gradient stops the run, or its step is undone.

Checking a flag on the host every step would synchronise the device every
step. Instead each step computes a 0-d bool *device* tensor ``finite``
(``isfinite(loss)`` and ``isfinite(max_i |grad_i|)`` over every parameter
gradient, one multi-tensor reduction) and hands it to
:class:`~ades_core.engine.stats.EpochStats`, which counts the bad steps and
remembers the first one's number. The trainer reads those counts with the
statistics it already reads once per log interval, before every checkpoint
and at the end of the epoch: no extra synchronisation.

``stop`` (the default): nothing else is done per step. The next read raises
:class:`NonFiniteError` naming the epoch and the exact first bad step. The
weights may already hold NaN by then, but no state is ever written after a
bad step (the check runs before every checkpoint), so the last good
checkpoint stays current and ``--resume`` continues from it.

``skip``: the step is a transaction. :meth:`StepGuard.begin` copies every
tensor the step may change (model parameters and buffers, the defense's
parameters and buffers, every optimiser state tensor) before the defense
runs; :meth:`StepGuard.commit` puts the copies back with ``torch.where(finite,
new, old)``, so a bad step leaves no trace and a good one is kept, with no
host read. Optimiser state created lazily by the step (SGD's momentum buffer
and Adam's moments on the first step) is reset to zeros on a bad step, which
is exactly the fresh state for Adam and for SGD without dampening. The cost
is one copy of the parameters, buffers and optimiser state per step, in
memory and bandwidth; the forward/backward passes of an adversarial step
dwarf it.

Under fp16 loss scaling (``GradScaler``) infinite gradients are part of the
normal dance: the scaler skips those steps itself, so only the loss is checked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ades_core.errors import AdesError


class NonFiniteError(AdesError, RuntimeError):
    """The training loss or a gradient became NaN or Inf; one line naming the epoch and step."""


def _gradient_max(params: Sequence[Tensor]) -> Tensor | None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm(grads, norm_type=math.inf)
    return torch.stack([torch.linalg.vector_norm(g, math.inf) for g in grads]).amax()


class StepGuard:
    """Per-step finiteness flag and, in ``skip`` mode, the undo of bad steps.

    Args:
        mode: ``"stop"`` or ``"skip"``.
        modules: the modules a step changes (model, defense): parameters and buffers.
        optimizers: the optimisers a step changes; their state tensors are guarded.
        check_grads: also check the gradients (off under fp16 loss scaling).
    """

    def __init__(
        self,
        mode: str,
        modules: Iterable[nn.Module],
        optimizers: Iterable[torch.optim.Optimizer],
        *,
        check_grads: bool = True,
    ) -> None:
        if mode not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {mode!r}")
        self.mode = mode
        self.modules = [m for m in modules if isinstance(m, nn.Module)]
        self.optimizers = list(optimizers)
        self.check_grads = check_grads
        self.params = [p for m in self.modules for p in m.parameters()]
        self._saved: list[tuple[Tensor, Tensor]] = []
        self._state_keys: set[tuple[int, str]] = set()

    def _tensors(self) -> list[Tensor]:
        live: dict[int, Tensor] = {}
        for module in self.modules:
            for t in (*module.parameters(), *module.buffers()):
                live[id(t)] = t
        for optimizer in self.optimizers:
            for state in optimizer.state.values():
                for value in state.values():
                    if isinstance(value, Tensor):
                        live[id(value)] = value
        return list(live.values())

    def _optimizer_state(self) -> set[tuple[int, str]]:
        return {
            (id(p), key)
            for optimizer in self.optimizers
            for p, state in optimizer.state.items()
            for key, value in state.items()
            if isinstance(value, Tensor)
        }

    def begin(self) -> None:
        """Before the defense's step: in ``skip`` mode, copy what the step may change."""
        if self.mode != "skip":
            return
        with torch.no_grad():
            self._saved = [(t, t.detach().clone()) for t in self._tensors()]
        self._state_keys = self._optimizer_state()

    def finite(self, loss: Tensor) -> Tensor:
        """After ``backward``, before the optimiser steps: 0-d bool, True when loss and gradients are finite."""
        with torch.no_grad():
            ok = torch.isfinite(loss.detach()).all()
            if self.check_grads:
                biggest = _gradient_max(self.params)
                if biggest is not None:
                    ok = ok & torch.isfinite(biggest)
        return ok

    def commit(self, finite: Tensor) -> None:
        """After the optimiser steps: in ``skip`` mode, undo everything the step changed unless ``finite``."""
        if self.mode != "skip":
            return
        with torch.no_grad():
            for live, saved in self._saved:
                live.copy_(torch.where(finite, live, saved))
            for optimizer in self.optimizers:
                for p, state in optimizer.state.items():
                    for key, value in state.items():
                        if isinstance(value, Tensor) and (id(p), key) not in self._state_keys:
                            value.copy_(torch.where(finite, value, torch.zeros_like(value)))
        self._saved = []


__all__ = ["NonFiniteError", "StepGuard"]
