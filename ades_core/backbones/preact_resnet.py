"""Pre-activation ResNet-18 for CIFAR (He et al., 2016, "Identity Mappings in Deep Residual Networks").

A 3x3 stem with 64 channels and no max-pool, four stages of two pre-activation
basic blocks (widths 64, 128, 256, 512; strides 1, 2, 2, 2), a final BN-ReLU,
global average pooling, optional dropout and a linear classifier. Registered in
timm as ``ades_preact_resnet18`` (11.17M parameters with 10 classes).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from ades_core.backbones.cifar_cfg import LinearHead, cifar_cfg, create_cifar_model, init_conv_bn

__all__ = ["PreActResNet"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 (stride), BN-ReLU-conv3x3, plus shortcut.

    The shortcut is the identity, or a 1x1 convolution of the pre-activated
    input when width or resolution changes. Maps ``(B, in_chs, H, W)`` to
    ``(B, out_chs, H / stride, W / stride)``.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if in_chs != out_chs or stride != 1:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return residual + out


class PreActResNet(LinearHead, nn.Module):
    """Pre-activation ResNet of basic blocks for 32x32 inputs.

    Args:
        layers: blocks per stage; ``(2, 2, 2, 2)`` is ResNet-18.
        num_classes: number of logits; 0 gives an identity classifier.
        in_chans: input channels.
        drop_rate: dropout probability on the pooled features before the
            classifier, in [0, 1).

    Shapes: ``forward_features`` maps ``(B, in_chans, H, W)`` (normalised
    inputs) to ``(B, 512, H/8, W/8)``; ``forward_head`` pools that to
    ``(B, num_features)`` and returns logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"PreActResNet got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"PreActResNet layers must be 4 positive block counts, got {layers}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"PreActResNet drop_rate must be in [0, 1), got {drop_rate}")
        widths = (64, 128, 256, 512)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = widths[-1]

        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        in_chs = widths[0]
        stages = []
        for i, (width, depth) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            blocks = [PreActBlock(in_chs, width, stride)]
            blocks += [PreActBlock(width, width, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_chs = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(widths[-1])
        self.fc: nn.Module = self._classifier(num_classes)
        init_conv_bn(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W)`` -> unpooled ``(B, 512, H/8, W/8)``, after BN-ReLU."""
        x = self.conv1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.relu(self.bn(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Average-pool ``(B, D, h, w)`` to ``(B, D)``; ``pre_logits`` stops there.

        Otherwise dropout (``drop_rate``, training only) and the classifier give
        logits ``(B, num_classes)``.
        """
        x = x.mean(dim=(2, 3))
        if pre_logits:
            return x
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for normalised inputs ``(B, in_chans, H, W)``."""
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs({"ades_preact_resnet18": cifar_cfg(pool_size=(4, 4))})


@register_model
def ades_preact_resnet18(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """Pre-activation ResNet-18 for CIFAR (11.2M parameters)."""
    model_args = dict(layers=(2, 2, 2, 2))
    return create_cifar_model(PreActResNet, "ades_preact_resnet18", pretrained, **dict(model_args, **kwargs))
