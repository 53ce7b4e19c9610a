"""Backbones: CIFAR models registered into timm, and the [0, 1]-input wrapper.

Importing this package registers the ``ades_*`` models in timm's registry, so
``timm.create_model("ades_wrn34_10")`` works afterwards. Models take
normalised inputs; :func:`create_classifier` wraps any timm model in a
:class:`NormalizedClassifier` that takes images ``(B, C, H, W)`` in [0, 1].
"""

from ades_core.backbones import cnn, preact_resnet, wrn  # noqa: F401 - registers ades_* in timm
from ades_core.backbones.cnn import SmallCNN
from ades_core.backbones.factory import ades_backbone_names, backbone_description, create_classifier
from ades_core.backbones.normalized import CIFAR10_MEAN, CIFAR10_STD, NormalizedClassifier
from ades_core.backbones.preact_resnet import PreActResNet
from ades_core.backbones.wrn import WideResNet

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "NormalizedClassifier",
    "PreActResNet",
    "SmallCNN",
    "WideResNet",
    "ades_backbone_names",
    "backbone_description",
    "create_classifier",
]
