"""Weights files of models ades did not train: read safely, unwrapped, checked against the model.

A ``.safetensors`` file, or a ``.pt`` / ``.pth`` PyTorch state_dict read with
``torch.load(..., weights_only=True)`` only, so loading it cannot run code; a
pickled module or any object that needs code to rebuild is refused. A
state_dict nested under ``state_dict`` or ``model`` (training checkpoints) is
unwrapped, and a ``module.`` (DDP) or ``_orig_mod.`` (``torch.compile``) prefix
on every key is removed. Every problem is one line (:class:`ExternalModelError`)
naming what does not fit. Used by :mod:`ades_core.evaluation.external`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ades_core.evaluation.sources import EvalSourceError

WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".pth")
"""Weights files read: safetensors, or a PyTorch state_dict (``weights_only=True``)."""

NESTED_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state_dict")
"""Keys a training checkpoint keeps its state_dict under; unwrapped when the file holds one."""

PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
"""Key prefixes removed when every key has them (DDP, ``torch.compile``)."""

EXPORT_NORMALIZE = "normalize."
EXPORT_MODEL = "model."
"""Key prefixes of a state_dict that holds its own normalisation (``ades export --robustbench``)."""


class ExternalModelError(EvalSourceError):
    """An architecture, weights file or normalisation that cannot make a model; one line."""


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
        raise ExternalModelError(f"{path} is not a readable safetensors file: {one_line(exc)}") from None
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
        raise ExternalModelError(f"cannot read {path} with torch.load: {one_line(exc)}") from None


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
            f"{path} is not a state_dict: {name_some(others)} "
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
            parts.append(f"missing {len(missing)} ({name_some(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} ({name_some(unexpected)})")
        raise ExternalModelError(f"the weights in {weights} do not fit {arch}: keys {'; '.join(parts)}")
    mismatched = [
        f"{k} {tuple(v.shape)} in the file vs {tuple(expected[k].shape)} in {arch}"
        for k, v in tensors.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise ExternalModelError(
            f"the weights in {weights} do not fit {arch}: shapes differ for {name_some(mismatched, 3)}"
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


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def name_some(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
