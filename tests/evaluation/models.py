"""Models and data for the evaluation tests: shape-agnostic, linear, masked, and coded."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ades_core.data import ImageTensors
from tests.tiny_models import LinearClassifier


class PooledNet(nn.Module):
    """Conv-BN-ReLU, adaptive pooling, dropout, linear: any ``(B, 3, H, W)``, 5 classes.

    Has BN statistics and a dropout layer, so tests can put it in mixed modes.
    """

    def __init__(self, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)))


class Linear(LinearClassifier):
    """``logits = W flatten(x) + b``; the exact L-inf robustness of a sample is known in closed form."""

    def __init__(self, in_features: int, num_classes: int, *, seed: int = 0, quantise: bool = False) -> None:
        super().__init__(in_features, num_classes, seed=seed)
        self.quantise = quantise

    def forward(self, x: Tensor) -> Tensor:
        if self.quantise:
            # A non-differentiable input layer: round() has zero gradient everywhere,
            # so gradient attacks see a flat loss while the model stays just as weak.
            x = torch.round(x * 255) / 255
        return self.fc(x.flatten(1))

    def exact_margin(self, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """``min_{j != y} (z_y - z_j - eps * ||w_y - w_j||_1)`` per sample (box not binding)."""
        with torch.no_grad():
            z = self.fc(x.flatten(1))
            w = self.fc.weight
            margins = []
            for i in range(len(y)):
                k = int(y[i])
                diff = z[i, k] - z[i] - eps * (w[k] - w).abs().sum(dim=1)
                diff[k] = float("inf")
                margins.append(diff.min())
            return torch.stack(margins)


def linear_data(
    model: Linear, count: int, shape: tuple[int, int, int], *, seed: int = 0, low: int = 96, high: int = 160
) -> ImageTensors:
    """uint8 images in ``[low, high]`` (far from 0 and 255) labelled with the model's own predictions."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(low, high + 1, (count, *shape), generator=generator, dtype=torch.uint8)
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(dim=1)
    classes = tuple(f"c{i}" for i in range(model.fc.out_features))
    return ImageTensors(images, labels.to(torch.int64), classes)


class CodedModel(nn.Module):
    """Predicts the class written in pixel ``(0, 0, 0)``: ``round(x * 10)``; for exact worst-case tests."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        code = (x[:, 0, 0, 0] * 10).round().long().clamp(0, self.num_classes - 1)
        return nn.functional.one_hot(code, self.num_classes).float() + self.anchor


def coded_data(labels: list[int], num_classes: int = 5) -> ImageTensors:
    images = torch.zeros(len(labels), 3, 2, 2, dtype=torch.uint8)
    for i, label in enumerate(labels):
        images[i, 0, 0, 0] = round(label / 10 * 255)
    return ImageTensors(images, torch.tensor(labels, dtype=torch.int64), tuple(f"c{i}" for i in range(num_classes)))


class RewriteCode:
    """A fake attack: rewrites the code pixel to a wrong class for samples whose label is in ``targets``."""

    def __init__(self, targets: set[int], num_classes: int = 5) -> None:
        self.targets = targets
        self.num_classes = num_classes

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, eps) -> Tensor:
        x_adv = x.clone()
        hit = torch.tensor([int(label) in self.targets for label in y], device=x.device)
        wrong = ((y + 1) % self.num_classes).float() / 10
        x_adv[:, 0, 0, 0] = torch.where(hit, wrong, x[:, 0, 0, 0])
        return x_adv
