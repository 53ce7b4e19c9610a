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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ades_core.backbones import NormalizedClassifier
from ades_core.evaluation.sources import EvalSourceError, RunInfo

WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".pth")
"""Weights files read: safetensors, or a PyTorch state_dict (``weights_only=True``)."""

NESTED_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state_dict")
"""Keys a training checkpoint keeps its state_dict under; unwrapped when the file holds one."""

PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
"""Key prefixes removed when every key has them (DDP, ``torch.compile``)."""

EXPORT_NORMALIZE = "normalize."
EXPORT_MODEL = "model."
"""Key prefixes of a state_dict that holds its own normalisation (``ades export --robustbench``)."""

_FACTORY = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*)$")


class ExternalModelError(EvalSourceError):
    """An architecture, weights file or normalisation that cannot make a model; one line."""


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
        raise ExternalModelError(f"cannot create {name!r} with {num_classes} classes: {_one_line(exc)}") from exc


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
            f"{spec}(num_classes={num_classes}) failed: {type(exc).__name__}: {_one_line(exc)}"
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
            f"cannot import {module_name!r} for architecture {spec!r}: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    finally:
        if added:
            sys.path.remove(cwd)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        what = "no attribute" if factory is None else "an attribute that is not callable named"
        raise ExternalModelError(f"module {module_name!r} has {what} {attr!r} (architecture {spec!r})")
    return factory


# --------------------------------------------------------------------------- weights


def read_state_dict(weights: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file, unwrapped and with DDP/compile prefixes removed.

    Args:
        weights: a ``.safetensors`` file, or a ``.pt`` / ``.pth`` file written by
            ``torch.save(model.state_dict(), path)`` (a checkpoint dict holding
            the state_dict under ``state_dict`` or ``model`` works too).

    Raises:
        ExternalModelError: a missing file, an unsupported suffix, an ades model
            file, a pickle that needs code to load, or a file that is not a
            mapping of names to tensors.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ExternalModelError(f"no weights file at {path}")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ExternalModelError(
            f"weights file {path} has suffix {path.suffix or '(none)'!r}; "
            f"accepted: {', '.join(WEIGHT_SUFFIXES)}"
        )
    raw = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    return _strip_prefixes(_tensors_only(_unwrap(raw, path), path))


def _read_safetensors(path: Path) -> Mapping[str, Any]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ExternalModelError(f"{path} is not a readable safetensors file: {_one_line(exc)}") from None
    if metadata.get("format") == "ades":
        raise ExternalModelError(
            f"{path} is an ades model file; evaluate it without --arch: ades eval {path}"
        )
    return tensors


_UNPICKLING_ERROR = torch.serialization.pickle.UnpicklingError
"""What ``torch.load(weights_only=True)`` raises for a file that is not a plain state_dict."""


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _UNPICKLING_ERROR:  # weights_only refused an object that needs code to load
        raise ExternalModelError(
            f"{path} is not a plain state_dict (loading it would run code); "
            "save model.state_dict() with torch.save, or use safetensors"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ExternalModelError(f"cannot read {path} with torch.load: {_one_line(exc)}") from None


def _unwrap(raw: Any, path: Path) -> Mapping[str, Any]:
    for _ in range(3):  # checkpoint -> {"model": {"state_dict": ...}} at most
        if not isinstance(raw, Mapping):
            break
        nested = [k for k in NESTED_KEYS if isinstance(raw.get(k), Mapping)]
        if not nested or all(isinstance(v, Tensor) for v in raw.values()):
            break
        raw = raw[nested[0]]
    if not isinstance(raw, Mapping):
        raise ExternalModelError(
            f"{path} holds a {type(raw).__name__}, not a state_dict (a mapping of names to tensors); "
            "save model.state_dict()"
        )
    return raw


def _tensors_only(raw: Mapping[str, Any], path: Path) -> dict[str, Tensor]:
    others = [str(k) for k, v in raw.items() if not isinstance(v, Tensor)]
    if others:
        raise ExternalModelError(
            f"{path} is not a state_dict: {_name_some(others)} "
            f"{'is' if len(others) == 1 else 'are'} not tensors; save model.state_dict()"
        )
    if not raw:
        raise ExternalModelError(f"{path} holds no tensors")
    return {str(k): v for k, v in raw.items()}


def _strip_prefixes(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def split_exported(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None, Tensor | None]:
    """``(model tensors, mean, std)`` of an exported state_dict, or ``(tensors, None, None)``.

    An exported state_dict (``ades export --robustbench``) holds ``normalize.mean``
    and ``normalize.std`` of shape ``(1, C, 1, 1)`` and the network under ``model.``.
    """
    mean, std = tensors.get(EXPORT_NORMALIZE + "mean"), tensors.get(EXPORT_NORMALIZE + "std")
    rest = [k for k in tensors if not k.startswith(EXPORT_NORMALIZE)]
    if mean is None or std is None or not all(k.startswith(EXPORT_MODEL) for k in rest):
        return tensors, None, None
    return {k[len(EXPORT_MODEL):]: tensors[k] for k in rest}, mean, std


def load_weights(model: nn.Module, tensors: dict[str, Tensor], *, arch: str, weights: str | Path) -> None:
    """Load ``tensors`` into ``model`` strictly, after checks that name what does not fit.

    BatchNorm's ``num_batches_tracked`` counters may be missing (older files);
    every other key must be present, known and of the model's shape.

    Raises:
        ExternalModelError: a classifier with another number of classes than the
            model's (the fix: the right number of classes), missing or unexpected
            keys, or shape mismatches (a few named).
    """
    expected = model.state_dict()
    classifier = _classifier_key(model)
    if classifier is not None and classifier in tensors:
        have, want = tuple(tensors[classifier].shape), tuple(expected[classifier].shape)
        if have[:1] != want[:1]:
            raise ExternalModelError(
                f"the classifier {classifier} in {weights} has {have[0] if have else '?'} outputs but "
                f"{want[0]} classes were asked for; pass --num-classes {have[0] if have else '?'} "
                "or the weights of a model with that many classes"
            )
    missing = [k for k in expected if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ({_name_some(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} ({_name_some(unexpected)})")
        raise ExternalModelError(f"the weights in {weights} do not fit {arch}: keys {'; '.join(parts)}")
    mismatched = [
        f"{k} {tuple(v.shape)} in the file vs {tuple(expected[k].shape)} in {arch}"
        for k, v in tensors.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise ExternalModelError(
            f"the weights in {weights} do not fit {arch}: shapes differ for {_name_some(mismatched, 3)}"
        )
    model.load_state_dict(tensors, strict=False)  # only num_batches_tracked may be absent


def _classifier_key(model: nn.Module) -> str | None:
    """The state_dict key of the final layer's weight: timm's ``get_classifier()``, else the last 2-D weight."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        for name, module in model.named_modules():
            if module is head and isinstance(getattr(module, "weight", None), Tensor):
                return f"{name}.weight" if name else "weight"
    keys = [k for k, v in model.state_dict().items() if k.endswith("weight") and v.ndim == 2]
    return keys[-1] if keys else None


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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _name_some(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
