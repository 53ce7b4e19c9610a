"""CIFAR WideResNet (Zagoruyko & Komodakis, 2016), as used in adversarial training.

The variant of the TRADES / MART code bases: a 3x3 stem with 16 channels, then
three groups of ``n = (depth - 4) / 6`` pre-activation basic blocks of widths
``16k``, ``32k``, ``64k`` (strides 1, 2, 2), a final BN-ReLU, global average
pooling and a linear classifier. Dropout, when ``drop_rate > 0``, sits inside
each block between its two convolutions, as in the original paper.

Registered in timm as ``ades_wrn34_10`` (46.16M parameters with 10 classes),
``ades_wrn28_10`` (36.48M) and ``ades_wrn16_4`` (2.75M).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from ades_core.backbones.cifar_cfg import LinearHead, cifar_cfg, create_cifar_model, init_conv_bn

__all__ = ["WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3 (stride), BN-ReLU-[dropout]-conv3x3.

    When the width or resolution changes, the shortcut is a 1x1 convolution of
    the pre-activated input; otherwise it is the identity on the raw input.
    Maps ``(B, in_chs, H, W)`` to ``(B, out_chs, H / stride, W / stride)``.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut: nn.Module | None = None
        if in_chs != out_chs or stride != 1:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return residual + self.conv2(out)


class WideResNet(LinearHead, nn.Module):
    """WRN-``depth``-``widen_factor`` for 32x32 inputs.

    Args:
        depth: total depth, ``6n + 4`` (16, 22, 28, 34, ...).
        widen_factor: width multiplier ``k`` of the three groups.
        num_classes: number of logits; 0 gives an identity classifier.
        in_chans: input channels.
        drop_rate: dropout probability inside every block, in [0, 1).

    Shapes: ``forward_features`` maps ``(B, in_chans, H, W)`` (normalised
    inputs) to ``(B, 64k, H/4, W/4)``; ``forward_head`` pools that to
    ``(B, num_features)`` and returns logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"WideResNet got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
        if widen_factor < 1:
            raise ValueError(f"WideResNet widen_factor must be >= 1, got {widen_factor}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"WideResNet drop_rate must be in [0, 1), got {drop_rate}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = widths[3]

        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = self._group(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = self._group(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = self._group(n, widths[2], widths[3], 2, drop_rate)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc: nn.Module = self._classifier(num_classes)
        init_conv_bn(self)

    @staticmethod
    def _group(n: int, in_chs: int, out_chs: int, stride: int, drop_rate: float) -> nn.Sequential:
        blocks = [WideBasicBlock(in_chs, out_chs, stride, drop_rate)]
        blocks += [WideBasicBlock(out_chs, out_chs, 1, drop_rate) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W)`` -> unpooled ``(B, num_features, H/4, W/4)``, after BN-ReLU."""
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        return F.relu(self.bn(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Average-pool ``(B, D, h, w)`` to ``(B, D)``; then the classifier unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for normalised inputs ``(B, in_chans, H, W)``."""
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "ades_wrn34_10": cifar_cfg(pool_size=(8, 8)),
        "ades_wrn28_10": cifar_cfg(pool_size=(8, 8)),
        "ades_wrn16_4": cifar_cfg(pool_size=(8, 8)),
    }
)


@register_model
def ades_wrn34_10(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WideResNet-34-10 for CIFAR (46.2M parameters), the TRADES / MART backbone."""
    model_args = dict(depth=34, widen_factor=10)
    return create_cifar_model(WideResNet, "ades_wrn34_10", pretrained, **dict(model_args, **kwargs))


@register_model
def ades_wrn28_10(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WideResNet-28-10 for CIFAR (36.5M parameters)."""
    model_args = dict(depth=28, widen_factor=10)
    return create_cifar_model(WideResNet, "ades_wrn28_10", pretrained, **dict(model_args, **kwargs))


@register_model
def ades_wrn16_4(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WideResNet-16-4 for CIFAR (2.7M parameters), small enough for tests."""
    model_args = dict(depth=16, widen_factor=4)
    return create_cifar_model(WideResNet, "ades_wrn16_4", pretrained, **dict(model_args, **kwargs))
