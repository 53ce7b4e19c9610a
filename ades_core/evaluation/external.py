"""Models ades did not train: an architecture, a weights file and the input normalisation.

An architecture is either a name timm knows (any ``timm.list_models()`` name,
the ``ades_*`` backbones included) or an importable factory
``"package.module:function"``, called as ``function(num_classes=K)`` and
returning an ``nn.Module`` that maps ``(B, C, H, W)`` images to ``(B, K)``
logits. The current working directory is importable, as with ``python -m``.

Weights are a ``.safetensors`` file or a ``.pt`` / ``.pth`` PyTorch state_dict.
A PyTorch file is read with ``torch.load(..., weights_only=True)`` only, so
loading it cannot run code; a pickled module or any object that needs code to
rebuild is refused. A state_dict nested under ``state_dict`` or ``model``
(training checkpoints) is unwrapped, and a ``module.`` (DDP) or
``_orig_mod.`` (``torch.compile``) prefix on every key is removed.

Attacks work in [0, 1] pixel scale, so the per-channel ``(x - mean) / std``
the model was trained with goes inside it
(:class:`~ades_core.backbones.NormalizedClassifier`); without ``mean`` and
``std`` the images in [0, 1] go into the model as they are. A state_dict
exported by ``ades export --robustbench`` (keys ``normalize.mean``,
``normalize.std`` and ``model.*``) carries its normalisation itself.

Example::

    model, info = load_external_model(
        "resnet18", "resnet18.pt", num_classes=10,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    )
    model(torch.rand(2, 3, 32, 32)).shape  # torch.Size([2, 10])
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ades_core.backbones import NormalizedClassifier
from ades_core.evaluation.sources import RunInfo
from ades_core.evaluation.weights_file import (
    ExternalModelError,
    one_line,
    load_weights,
    read_state_dict,
    split_exported,
)

_FACTORY = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*)$")


# --------------------------------------------------------------------------- architecture


def is_factory_spec(arch: str) -> bool:
    """Whether ``arch`` names a ``module:factory`` (a ``:`` in it) rather than a timm model."""
    return ":" in arch


def build_architecture(arch: str, *, num_classes: int) -> nn.Module:
    """An untrained ``arch`` with ``num_classes`` outputs, on the CPU.

    Args:
        arch: a timm model name (``"resnet18"``, ``"ades_wrn34_10"``) or
            ``"package.module:factory"``, called as ``factory(num_classes=num_classes)``.
        num_classes: the number of logits ``K``.

    Raises:
        ExternalModelError: an unknown timm name (close names are suggested), a
            malformed or unimportable factory, or a factory that fails or returns
            something other than an ``nn.Module``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ExternalModelError(f"the number of classes must be a positive integer, got {num_classes!r}")
    if is_factory_spec(arch):
        return _call_factory(arch, num_classes)
    return _create_timm(arch, num_classes)


def _create_timm(name: str, num_classes: int) -> nn.Module:
    import timm

    import ades_core.backbones  # noqa: F401  (registers the ades_* backbones into timm)

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ExternalModelError(
            f"unknown architecture {name!r}; {hint}give a timm model name (timm.list_models(), "
            "ades_* included) or package.module:factory"
        )
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ExternalModelError(f"cannot create {name!r} with {num_classes} classes: {one_line(exc)}") from exc


def _call_factory(spec: str, num_classes: int) -> nn.Module:
    match = _FACTORY.match(spec)
    if match is None:
        raise ExternalModelError(
            f"bad architecture {spec!r}: a factory is written package.module:function "
            "(importable names, one colon), e.g. my_models:make_model"
        )
    factory = _import_factory(match["module"], match["attr"], spec)
    try:
        model = factory(num_classes=num_classes)
    except Exception as exc:  # noqa: BLE001 - user code: any failure is reported in one line
        raise ExternalModelError(
            f"{spec}(num_classes={num_classes}) failed: {type(exc).__name__}: {one_line(exc)}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ExternalModelError(
            f"{spec}(num_classes={num_classes}) returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _import_factory(module_name: str, attr: str, spec: str) -> Callable[..., Any]:
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, or the module's own error on import
        raise ExternalModelError(
            f"cannot import {module_name!r} for architecture {spec!r}: {type(exc).__name__}: {one_line(exc)}"
        ) from exc
    finally:
        if added:
            sys.path.remove(cwd)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        what = "no attribute" if factory is None else "an attribute that is not callable named"
        raise ExternalModelError(f"module {module_name!r} has {what} {attr!r} (architecture {spec!r})")
    return factory


# --------------------------------------------------------------------------- normalisation


def channel_values(values: Sequence[Any] | None, option: str) -> tuple[float, ...] | None:
    """``values`` (floats or strings like ``"0.4914"``) as a float tuple; ``None`` stays ``None``.

    Raises:
        ExternalModelError: a value that is not a finite number, naming ``option``.
    """
    if values is None:
        return None
    out = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ExternalModelError(
                f"{option} takes comma-separated numbers, one per channel (e.g. 0.4914,0.4822,0.4465); "
                f"got {value!r}"
            ) from None
        if not math.isfinite(number):
            raise ExternalModelError(f"{option} values must be finite, got {value!r}")
        out.append(number)
    return tuple(out)


def check_normalization(
    mean: Sequence[float] | None, std: Sequence[float] | None, *, in_channels: int | None, arch: str
) -> None:
    """Raise :class:`ExternalModelError` unless ``mean`` and ``std`` fit together and the model.

    Both or neither must be given, with one value per input channel
    (``in_channels``, when the model's first convolution tells it) and every
    ``std > 0``. Values are in [0, 1] pixel scale.
    """
    if (mean is None) != (std is None):
        raise ExternalModelError("--mean and --std go together: give both (one value per channel) or neither")
    if mean is None or std is None:
        return
    if len(mean) != len(std):
        raise ExternalModelError(f"--mean has {len(mean)} values but --std has {len(std)}; give one per channel")
    if in_channels is not None and len(mean) != in_channels:
        raise ExternalModelError(
            f"--mean and --std have {len(mean)} values but {arch} takes {in_channels} input channels; "
            "give one value per channel"
        )
    if not all(s > 0 for s in std):
        raise ExternalModelError(f"--std must be > 0 for every channel, got {','.join(map(str, std))}")


def _input_channels(model: nn.Module) -> int | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


# --------------------------------------------------------------------------- the whole


def load_external_model(
    arch: str,
    weights: str | Path,
    *,
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, RunInfo]:
    """Build ``arch``, load ``weights`` into it and wrap it to take images in [0, 1].

    Args:
        arch: a timm model name (``ades_*`` included) or ``"package.module:factory"``
            (called as ``factory(num_classes=num_classes)``).
        weights: ``.safetensors``, ``.pt`` or ``.pth`` state_dict (see :func:`read_state_dict`).
        num_classes: the number of logits ``K``; must match the weights' classifier.
        mean, std: the per-channel normalisation the model was trained with, in
            [0, 1] pixel scale (``std > 0``), put inside the model; ``None`` for
            both when the model takes [0, 1] images as they are (or when the
            weights are an ``ades export`` file, which holds its own).
        device: where the model goes.

    Returns:
        ``(model, info)``: the model in eval mode, mapping ``(B, C, H, W)`` in
        [0, 1] to logits ``(B, K)``; ``info`` has ``model_file`` = the weights,
        ``backbone`` = ``arch``, ``defense`` = ``"external"`` and
        ``external`` = what was loaded (for ``eval.json``).

    Raises:
        ExternalModelError: every bad input, in one line (see the module docstring).
    """
    weights_path = Path(weights).expanduser()
    mean = channel_values(mean, "--mean")
    std = channel_values(std, "--std")
    model = build_architecture(arch, num_classes=num_classes)
    check_normalization(mean, std, in_channels=_input_channels(model), arch=arch)
    tensors, stored_mean, stored_std = split_exported(read_state_dict(weights_path))
    if stored_mean is not None and stored_std is not None:
        if mean is not None:
            raise ExternalModelError(
                f"{weights_path} holds its own normalisation (normalize.mean, normalize.std); "
                "leave out --mean and --std"
            )
        mean, std = tuple(stored_mean.view(-1).tolist()), tuple(stored_std.view(-1).tolist())
        check_normalization(mean, std, in_channels=_input_channels(model), arch=arch)
    load_weights(model, tensors, arch=arch, weights=weights_path)
    wrapped: nn.Module = model if mean is None else NormalizedClassifier(model, mean, std)  # type: ignore[arg-type]
    external = {
        "arch": arch,
        "weights": str(weights_path),
        "num_classes": num_classes,
        "mean": None if mean is None else list(mean),
        "std": None if std is None else list(std),
    }
    info = RunInfo(
        model_file=weights_path,
        run_dir=None,
        config={"model": {"backbone": arch}},
        num_classes=num_classes,
        external=external,
    )
    return wrapped.to(device).eval(), info
