"""What every ``ades_*`` backbone shares: its CIFAR default cfg and its timm builder call."""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg
from torch import nn

from ades_core.backbones.normalized import CIFAR10_MEAN, CIFAR10_STD


def cifar_cfg(**overrides: Any) -> dict[str, Any]:
    """timm ``default_cfg`` for a CIFAR model: 3x32x32 input, CIFAR-10 statistics, no weights."""
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        **overrides,
    }


def create_cifar_model(cls: type[nn.Module], variant: str, pretrained: bool = False, **kwargs: Any) -> Any:
    """Build ``cls`` through timm's builder; ades backbones ship no pretrained weights."""
    if pretrained:
        raise ValueError(f"{variant} has no pretrained weights; use pretrained=False")
    return build_model_with_cfg(cls, variant, pretrained, **kwargs)
