"""Build a classifier for [0, 1] inputs from any backbone name timm knows.

The ``ades_*`` CIFAR backbones register themselves into timm's model registry
when :mod:`ades_core.backbones` is imported, so one name space covers them and
every timm model::

    >>> import torch
    >>> from ades_core.backbones import CIFAR10_MEAN, CIFAR10_STD, create_classifier
    >>> model = create_classifier("ades_wrn16_4", num_classes=10,
    ...                           mean=CIFAR10_MEAN, std=CIFAR10_STD)
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
from timm.models import is_model, model_entrypoint

from ades_core.backbones.normalized import NormalizedClassifier
from ades_core.errors import InputError
from ades_core.registry import RegistryError


def ades_backbone_names() -> list[str]:
    """The registered ``ades_*`` backbones, sorted."""
    return sorted(timm.list_models("ades_*"))


def check_backbone_name(name: str) -> None:
    """Raise :class:`RegistryError` (listing the ades backbones) unless timm knows ``name``."""
    if not isinstance(name, str) or not is_model(name):
        raise RegistryError(
            f"unknown backbone {name!r}; ades backbones: {', '.join(ades_backbone_names())}; "
            "or any timm model name (timm.list_models())"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def backbone_description(name: str) -> str:
    """A one-line description of backbone ``name`` for listings (``ades list``).

    The first line of the timm entry point's docstring, or ``"timm model <name>"``
    when it has none. Unknown names raise :class:`RegistryError`.
    """
    check_backbone_name(name)
    doc = (model_entrypoint(name).__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else f"timm model {name}"


def create_classifier(
    name: str,
    *,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    **kwargs: Any,
) -> NormalizedClassifier:
    """Create backbone ``name`` (no pretrained weights) wrapped to take [0, 1] inputs.

    Args:
        name: an ``ades_*`` backbone (see :func:`ades_backbone_names`) or any
            timm model name (``"resnet18"``; it must accept the input size you use).
        num_classes: number of logits ``K``.
        mean, std: per-channel normalisation in [0, 1] pixel scale, one float
            per input channel (``std > 0``).
        **kwargs: passed to ``timm.create_model`` and on to the model class
            (``drop_rate``, ``width``, ``in_chans``, ...).

    Returns:
        A :class:`NormalizedClassifier` mapping ``(B, C, H, W)`` in [0, 1] to
        logits ``(B, K)``, in train mode, on the CPU.

    Raises:
        RegistryError: ``name`` is not a registered model.
        ValueError: the model rejects ``kwargs``, or ``mean`` / ``std`` are malformed.
    """
    check_backbone_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    in_chans = kwargs.get("in_chans", 3)
    try:
        counts = (len(mean), len(std))
    except TypeError:
        raise ValueError(f"mean and std must be sequences of floats, got {mean!r} and {std!r}") from None
    if counts != (in_chans, in_chans):
        raise ValueError(
            f"mean and std need {in_chans} values (in_chans) for backbone {name!r}, "
            f"got {counts[0]} and {counts[1]}"
        )
    try:
        backbone = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"cannot create backbone {name!r} with arguments {sorted(kwargs)}: {_one_line(exc)}"
        ) from exc
    return NormalizedClassifier(backbone, mean, std)
