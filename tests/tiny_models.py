"""Tiny models whose outputs can be computed by hand in the tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LinearClassifier(nn.Module):
    """``logits = W flatten(x) + b`` with a timm-style head (no dropout of its own)."""

    def __init__(self, in_features: int, num_classes: int, *, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(in_features, num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(num_classes, in_features, generator=generator))
            self.fc.bias.copy_(torch.randn(num_classes, generator=generator))
        self.num_classes = num_classes
        self.forward_calls = 0

    def forward_features(self, x: Tensor) -> Tensor:
        self.forward_calls += 1  # every pass, whole or split, goes through here
        return x.flatten(1)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        return features if pre_logits else self.fc(features)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class DropoutBNNet(nn.Module):
    """Conv-BN-ReLU, pooling, dropout, linear: has BN statistics and a dropout layer."""

    def __init__(self, channels: int = 3, num_classes: int = 4, p: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.fc(self.drop(h))


MARGIN_W = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 1.5])
"""The class-1-minus-class-0 weights of :func:`two_class_margin_model` (inputs ``(B, 1, 2, 3)``)."""


def two_class_margin_model() -> LinearClassifier:
    """``z_1 - z_0 = W.x - W.sum()/2``: zero at the grey image 0.5, so L-inf margins have a closed form."""
    model = LinearClassifier(6, 2)
    with torch.no_grad():
        model.fc.weight.copy_(torch.stack([torch.zeros(6), MARGIN_W]))
        model.fc.bias.copy_(torch.tensor([0.0, -0.5 * float(MARGIN_W.sum())]))
    return model


def images_at_margins(margins: list[float]) -> Tensor:
    """Images ``(B, 1, 2, 3)`` of class 0 whose L-inf distance to the boundary of
    :func:`two_class_margin_model` is exactly ``margins[i]``: ``x = 0.5 - a * sign(W)``
    gives ``z_1 - z_0 = -a ||W||_1``."""
    a = torch.tensor(margins).view(-1, 1)
    return (0.5 - a * MARGIN_W.sign()).view(-1, 1, 2, 3)


def record_attack(defense) -> list[Tensor]:
    """Wrap ``defense.attack`` so every adversarial batch it returns is appended to the returned list."""
    adversarial: list[Tensor] = []
    attack = defense.attack

    def spy(model, x, target, eps, **kwargs):
        adversarial.append(attack(model, x, target, eps, **kwargs))
        return adversarial[-1]

    defense.attack = spy
    return adversarial

