"""An exponential moving average of a model's weights, kept on the model's device.

``WeightAverage(model, decay)`` keeps one float tensor per entry of
``model.state_dict()`` (weights and buffers, the same shapes and dtypes, on
the same device). :meth:`WeightAverage.update` runs after every optimiser
step: with ``t`` the 1-based number of updates and
``d_t = min(decay, (1 + t) / (10 + t))`` (``warmup``; else ``d_t = decay``),

    w_ema <- d_t * w_ema + (1 - d_t) * w          (one ``torch._foreach_lerp_``)

for every parameter and, with ``buffers="average"``, every floating-point
buffer (BatchNorm running mean and variance); with ``buffers="copy"`` those
are copied from the model instead. Integer buffers (``num_batches_tracked``)
are always copied. ``d_t`` is computed on the host from the update count (a
Python int), so an update launches device kernels and reads nothing back.

The average starts as a copy of the model (``t = 0``); the first update with
warm-up has ``d_1 = 2 / 11``, so the initial weights fade within tens of steps
whatever ``decay`` is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ades_core.training_config import EMA_BUFFER_MODES


def warmup_decay(decay: float, updates: int, *, warmup: bool = True) -> float:
    """``min(decay, (1 + t) / (10 + t))`` for ``t = updates`` (>= 1), or ``decay`` without warm-up."""
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


class WeightAverage:
    """The EMA of ``model``'s ``state_dict``; see the module docstring.

    Args:
        model: the trained model (the plain module, not a DDP wrapper).
        decay: ``d`` in (0, 1).
        warmup: use ``d_t = min(d, (1 + t) / (10 + t))``.
        buffers: ``"average"`` or ``"copy"`` for floating-point buffers.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True, buffers: str = "average") -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        if buffers not in EMA_BUFFER_MODES:
            raise ValueError(f"EMA buffers must be one of {', '.join(EMA_BUFFER_MODES)}, got {buffers!r}")
        self.decay, self.warmup, self.buffers = float(decay), bool(warmup), buffers
        self.updates = 0
        params = {name for name, _ in model.named_parameters()}
        state = model.state_dict()
        self.names = list(state)
        self.average = {name: t.detach().clone() for name, t in state.items()}
        self._model = model
        blended = [
            n for n in self.names
            if state[n].is_floating_point() and (n in params or buffers == "average")
        ]
        self._blended = blended
        self._copied = [n for n in self.names if n not in set(blended)]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into the average (after an optimiser step)."""
        self.updates += 1
        weight = 1.0 - warmup_decay(self.decay, self.updates, warmup=self.warmup)
        state = self._model.state_dict()
        if self._blended:
            torch._foreach_lerp_(
                [self.average[n] for n in self._blended], [state[n].detach() for n in self._blended], weight
            )
        for name in self._copied:
            self.average[name].copy_(state[name])

    def state_dict(self) -> dict[str, Any]:
        """The average's tensors and update count (for the training state)."""
        return {"updates": self.updates, "average": dict(self.average)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        average = state["average"]
        if set(average) != set(self.names):
            raise ValueError("the saved weight average does not match the model's state_dict keys")
        with torch.no_grad():
            for name, tensor in average.items():
                self.average[name].copy_(tensor)
        self.updates = int(state["updates"])

    def averaged_state(self) -> dict[str, Tensor]:
        """The averaged ``state_dict`` (the tensors themselves; copy before changing them)."""
        return self.average

    def copy_into(self, model: nn.Module) -> nn.Module:
        """Load the average into ``model`` (a module of the same architecture); returns it."""
        model.load_state_dict(self.average, strict=True)
        return model


__all__ = ["WeightAverage", "warmup_decay"]
