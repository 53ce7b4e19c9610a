"""A small, fast CNN for CPU experiments and tests.

Two VGG-style stages of two conv3x3-BN-ReLU layers each, with a 2x2 max-pool
after each stage, then a 256-unit hidden layer with dropout and a linear
classifier. With the default width 32 it has about 1.1M parameters, most of
them in the hidden layer. Registered in timm as ``ades_cnn_small``.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from ades_core.backbones.cifar_cfg import LinearHead, cifar_cfg, create_cifar_model

__all__ = ["SmallCNN"]


def _conv_bn_relu(in_chs: int, out_chs: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False), nn.BatchNorm2d(out_chs), nn.ReLU()]


class SmallCNN(LinearHead, nn.Module):
    """conv(w)-conv(w)-pool-conv(2w)-conv(2w)-pool, Linear(256)-ReLU-Dropout-Linear.

    Args:
        num_classes: number of logits; 0 gives an identity classifier.
        in_chans: input channels.
        drop_rate: dropout probability before the classifier, in [0, 1).
        width: channels ``w`` of the first stage (the second has ``2w``).
        img_size: input side ``S`` in pixels, or ``(H, W)``; multiples of 4.
            The hidden layer is sized for it, so other sizes are rejected.

    Shapes: ``forward_features`` maps ``(B, in_chans, H, W)`` (normalised
    inputs) to the flattened conv features ``(B, 2w * H/4 * W/4)``;
    ``forward_head`` maps those to the hidden features ``(B, 256)``
    (``pre_logits=True``) or to logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.3,
        width: int = 32,
        img_size: int | tuple[int, int] = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"SmallCNN got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        if width < 1:
            raise ValueError(f"SmallCNN width must be >= 1, got {width}")
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(size) != 2 or any(s < 4 or s % 4 != 0 for s in size):
            raise ValueError(f"SmallCNN img_size must be positive multiples of 4, got {img_size}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"SmallCNN drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.img_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.num_features = self.head_hidden_size = 256
        self.features = nn.Sequential(
            *_conv_bn_relu(in_chans, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            *_conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.hidden = nn.Linear(2 * width * (size[0] // 4) * (size[1] // 4), self.num_features)
        self.act = nn.ReLU()
        self.head_drop = nn.Dropout(p=drop_rate)
        self.fc: nn.Module = self._classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W)`` with ``(H, W) = img_size`` -> flattened ``(B, 2w * H/4 * W/4)``."""
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"SmallCNN expects {self.img_size[0]}x{self.img_size[1]} inputs, got "
                f"{x.shape[-2]}x{x.shape[-1]}; pass img_size= when creating it"
            )
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Hidden layer: ``(B, 256)`` ReLU features if ``pre_logits`` (before dropout), else logits."""
        x = self.act(self.hidden(x))
        if pre_logits:
            return x
        return self.fc(self.head_drop(x))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for normalised inputs ``(B, in_chans, H, W)``."""
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs({"ades_cnn_small": cifar_cfg(fixed_input_size=True, first_conv="features.0")})


@register_model
def ades_cnn_small(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """Small 4-conv CNN with a dropout head (1.1M parameters), fast on CPU."""
    return create_cifar_model(SmallCNN, "ades_cnn_small", pretrained, **kwargs)
