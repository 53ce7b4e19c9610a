"""The optimisers a run steps: the model's SGD, the defense's own Adam, and the fp16 loss scaler."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from ades_core.config import RunConfig
from ades_core.protocols import Defense


@attrs.frozen
class Optimizers:
    """What :func:`~ades_core.engine.step.training_step` steps after each backward.

    Attributes:
        model: SGD on the model's parameters (``config.optim``: lr, momentum, weight decay).
        defense: Adam on the defense's trainable parameters (a learnable
            scheduler, at ``config.scheduler.learning_rate()``), or ``None``.
        grad_scaler: the loss scaler when autocast runs in fp16, else ``None``.
    """

    model: torch.optim.Optimizer
    defense: torch.optim.Optimizer | None
    grad_scaler: torch.amp.GradScaler | None


def build_optimizers(
    config: RunConfig, model: nn.Module, defense: Defense, device: torch.device, autocast_dtype: torch.dtype | None
) -> Optimizers:
    """The optimisers of ``model`` and ``defense`` (both on ``device``) for ``config``."""
    optim = config.optim
    optimizer = torch.optim.SGD(
        model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )
    defense_params = [p for p in defense.parameters() if p.requires_grad]
    # capturable on CUDA keeps Adam's step counters on the device, so the non-finite guard
    # can undo a skipped step there without a host read (engine/nonfinite.py)
    defense_optimizer = (
        torch.optim.Adam(defense_params, lr=config.scheduler.learning_rate(), capturable=device.type == "cuda")
        if defense_params
        else None
    )
    grad_scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None
    return Optimizers(model=optimizer, defense=defense_optimizer, grad_scaler=grad_scaler)


__all__ = ["Optimizers", "build_optimizers"]
