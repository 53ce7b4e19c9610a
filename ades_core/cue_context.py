"""What a cue sees for one batch, with the model's passes shared between cues."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ades_core.batch_reduction import LOCAL, BatchReduction
from ades_core.errors import InputError
from ades_core.model_mode import autocast_for, eval_mode


class CueContext:
    """The batch at the point where cues are evaluated, and the passes cues share.

    One forward pass and one input-gradient backward of the cross-entropy, in
    eval mode (no BN statistic updates, dropout off, parameter ``.grad``
    untouched), are run at most once per batch, whichever cue asks first; they
    give ``logits``, ``input_grad`` and, for models with a timm-style head
    (``forward_features``/``forward_head``), the backbone ``features`` that
    head-only MC-dropout reuses.

    Attributes:
        model: the classifier, ``(B, C, H, W)`` in [0, 1] -> logits ``(B, K)``.
        x: ``(B, C, H, W)`` in [0, 1]: the clean batch, or (shared cues) the
            attack's start point.
        y: ``(B,)`` int64 labels.
        autocast_dtype: dtype for autocast on the model's forward, or ``None``.
        reduction: how the batch is reduced when the cues are normalised
            (:func:`~ades_core.cues.extract_cues`): :data:`~ades_core.batch_reduction.LOCAL`
            on one process, the global batch under ``torchrun`` (the defense
            passes the one it was built with, ``DefenseParts.reduction``).
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        autocast_dtype: torch.dtype | None = None,
        *,
        reduction: BatchReduction = LOCAL,
    ) -> None:
        self.model = model
        self.x = x
        self.y = y
        self.autocast_dtype = autocast_dtype
        self.reduction = reduction
        self._logits: Tensor | None = None
        self._input_grad: Tensor | None = None
        self._features: Tensor | None = None

    @property
    def splits_head(self) -> bool:
        """Whether the model exposes ``forward_features`` and ``forward_head`` (timm style)."""
        return hasattr(self.model, "forward_features") and hasattr(self.model, "forward_head")

    def _forward_backward(self) -> None:
        model = self.model
        x = self.x.detach().requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            with autocast_for(x, self.autocast_dtype):
                if self.splits_head:
                    features = model.forward_features(x)
                    logits = model.forward_head(features)
                else:
                    features, logits = None, model(x)
            loss = nn.functional.cross_entropy(logits.float(), self.y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        self._logits = logits.detach().float()
        self._input_grad = grad.detach()
        self._features = None if features is None else features.detach()

    @property
    def has_logits(self) -> bool:
        """Whether the shared pass has already run (then logits, gradient, features are free)."""
        return self._logits is not None

    @property
    def logits(self) -> Tensor:
        """``(B, K)`` float32 logits at ``x``, eval mode, detached."""
        if self._logits is None:
            self._forward_backward()
        return self._logits  # type: ignore[return-value]

    @property
    def input_grad(self) -> Tensor:
        """``(B, C, H, W)`` gradient of the per-sample cross-entropy w.r.t. ``x``."""
        if self._input_grad is None:
            self._forward_backward()
        return self._input_grad  # type: ignore[return-value]

    @property
    def features(self) -> Tensor:
        """``forward_features(x)``, detached (the input of ``forward_head``).

        Raises:
            ValueError: the model has no ``forward_features``/``forward_head``.
        """
        if not self.splits_head:
            raise InputError(
                f"{type(self.model).__name__} has no forward_features/forward_head (timm style); "
                "head-only cues need one"
            )
        if self._features is None:
            self._forward_backward()
        return self._features  # type: ignore[return-value]
