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
