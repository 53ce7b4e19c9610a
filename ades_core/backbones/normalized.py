"""A classifier that takes images in [0, 1] and normalises them itself.

Everything in ades (attacks, budgets, cues) works in ``[0, 1]`` pixel scale;
the per-channel ``(x - mean) / std`` of the training recipe therefore lives
inside the model, as the first step of its forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
"""Per-channel mean of the CIFAR-10 training images, in [0, 1] pixel scale."""

CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
"""Per-channel standard deviation of the CIFAR-10 training images, in [0, 1] pixel scale."""


def _channel_stats(name: str, values: Sequence[float]) -> Tensor:
    """``values`` as a float32 ``(1, C, 1, 1)`` tensor; a one-line ValueError if malformed."""
    try:
        stats = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of floats, got {values!r}") from None
    if stats.ndim != 1 or stats.numel() == 0:
        raise ValueError(f"{name} must hold one float per channel, got {values!r}")
    if not torch.isfinite(stats).all():
        raise ValueError(f"{name} must be finite, got {tuple(values)}")
    return stats.view(1, -1, 1, 1)


class NormalizedClassifier(nn.Module):
    """Wraps a timm-style backbone so that it takes inputs in ``[0, 1]``.

    ``forward(x) = backbone((x - mean) / std)`` for ``x`` of shape
    ``(B, C, H, W)`` in ``[0, 1]`` pixel scale; it returns logits
    ``(B, num_classes)``. The backbone's timm methods are exposed with the same
    normalisation, so callers can reuse penultimate features::

        feats = model.forward_head(model.forward_features(x), pre_logits=True)  # (B, D)
        logits = model.get_classifier()(feats)                                 # (B, K)

    Args:
        backbone: a module with timm's ``forward_features`` / ``forward_head`` /
            ``get_classifier`` interface (any ``timm.create_model`` result).
        mean: per-channel mean, in [0, 1] pixel scale, one float per channel.
        std: per-channel standard deviation, in [0, 1] pixel scale, all > 0.

    Attributes:
        backbone: the wrapped module, which sees normalised inputs.
        mean, std: float32 buffers of shape ``(1, C, 1, 1)``; they follow the
            module across ``.to(device)`` and are saved in ``state_dict``.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = _channel_stats("mean", mean)
        std_t = _channel_stats("std", std)
        if mean_t.shape != std_t.shape:
            raise ValueError(
                f"mean and std must have one value per channel each, got {len(mean_t.view(-1))} "
                f"and {len(std_t.view(-1))}"
            )
        if not (std_t > 0).all():
            raise ValueError(f"std must be > 0 for every channel, got {tuple(std)}")
        self.backbone = backbone
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    @property
    def num_classes(self) -> int:
        """Number of output logits of the backbone."""
        return int(self.backbone.num_classes)

    @property
    def num_features(self) -> int:
        """Width ``D`` of the penultimate features ``forward_head(..., pre_logits=True)``."""
        return int(self.backbone.num_features)

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` for ``x`` ``(B, C, H, W)`` in [0, 1]; same shape and dtype."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone features of ``x`` ``(B, C, H, W)`` in [0, 1] (normalised first).

        Returns whatever the backbone's ``forward_features`` returns, usually the
        unpooled feature map ``(B, D, h, w)``.
        """
        return self.backbone.forward_features(self.normalize(x))

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """The backbone's head on ``forward_features`` output.

        Returns logits ``(B, num_classes)``, or with ``pre_logits=True`` the
        pooled penultimate features ``(B, num_features)``.
        """
        return self.backbone.forward_head(features, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        """The final layer, mapping ``(B, num_features)`` to ``(B, num_classes)``."""
        return self.backbone.get_classifier()

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for ``x`` ``(B, C, H, W)`` in [0, 1] pixel scale."""
        return self.backbone(self.normalize(x))

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4f}" for v in self.mean.view(-1).tolist())
        std = ", ".join(f"{v:.4f}" for v in self.std.view(-1).tolist())
        return f"mean=({mean}), std=({std})"
