"""What every ``ades_*`` backbone shares: its CIFAR default cfg, its timm builder call,
its linear classifier plumbing and its weight initialisation."""

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


class LinearHead:
    """timm's classifier interface for a model whose head ends in ``self.fc``.

    The model sets ``num_features`` and ``num_classes`` and builds ``self.fc``
    with :meth:`_classifier`.
    """

    num_features: int
    num_classes: int
    fc: nn.Module

    def _classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The final linear layer, ``(B, num_features) -> (B, num_classes)``."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0: identity)."""
        self.num_classes = num_classes
        self.fc = self._classifier(num_classes)


def init_conv_bn(model: nn.Module) -> None:
    """Kaiming-normal (fan out) convolutions, unit BN scale, zero BN and linear biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
