"""Nested state (``state_dict()`` output) <-> JSON plus a flat dict of tensors.

A training state is a tree of dicts, lists, tuples, numbers, strings and
tensors (a model's or optimiser's ``state_dict()``, RNG states, counters).
:func:`encode` splits it into a JSON-ready tree, in which every tensor is
replaced by ``{"__tensor__": key}``, and a flat ``{key: tensor}`` dict for a
safetensors file; :func:`decode` puts them back together. Nothing is pickled:
a value of any other type is refused when the state is written.

Types JSON lacks are tagged so they come back as they went in:

==========================  =============================================
value                       JSON
==========================  =============================================
tensor                      ``{"__tensor__": "optimizer/state/0/momentum_buffer"}``
dict with str keys          a JSON object (keys starting ``__`` are tagged as below)
dict with other keys        ``{"__items__": [[key, value], ...]}`` (an optimiser's int ids)
``collections.Counter``     ``{"__counter__": [[key, count], ...]}`` (MultiStepLR milestones)
tuple                       ``{"__tuple__": [...]}`` (Adam's betas)
NaN, Inf, -Inf (floats)     ``{"__float__": "nan"}``, ``"inf"``, ``"-inf"``
==========================  =============================================

So the JSON is strict (no ``NaN``/``Infinity`` tokens) and a non-finite
float still comes back as the same float.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ades_core.errors import AdesError

_SCALARS = (str, int, float, bool, type(None))
_TAGS = ("__tensor__", "__items__", "__counter__", "__tuple__", "__float__")


class StateCodecError(AdesError, ValueError):
    """A value that cannot be stored without pickle, or a stored tree that does not decode; one line."""


def encode(obj: Any, tensors: dict[str, Tensor], path: str = "") -> Any:
    """The JSON-ready form of ``obj``; its tensors go into ``tensors`` (CPU, contiguous copies).

    ``path`` names the tensors (``"model/features.0.weight"``); it must be
    unique per tensor, which it is for the keys of nested dicts and lists.
    """
    if isinstance(obj, Tensor):
        if path in tensors:
            raise StateCodecError(f"two tensors of the training state are both named {path!r}")
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, bool) or isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, Counter):
        return {"__counter__": _pairs(obj, tensors, path)}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, tensors, _child(path, k)) for k, v in obj.items()}
        return {"__items__": _pairs(obj, tensors, path)}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, _child(path, i)) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, _child(path, i)) for i, v in enumerate(obj)]
    raise StateCodecError(
        f"cannot store a {type(obj).__name__} at {path or 'the top'} of the training state "
        "(only tensors, numbers, strings, lists, tuples and dicts are stored; nothing is pickled)"
    )


def _pairs(obj: Mapping[Any, Any], tensors: dict[str, Tensor], path: str) -> list[list[Any]]:
    return [[_key(k, path), encode(v, tensors, _child(path, k))] for k, v in obj.items()]


def _child(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def _key(key: Any, path: str) -> Any:
    if not isinstance(key, _SCALARS):
        raise StateCodecError(f"cannot store a {type(key).__name__} dict key at {path or 'the top'}")
    return key


def decode(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`encode`: the tree with every ``{"__tensor__": key}`` replaced by its tensor."""
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag == "__tensor__":
            if value not in tensors:
                raise StateCodecError(
                    f"the training state names a tensor {value!r} its tensor file lacks"
                )
            return tensors[value]
        if tag == "__items__":
            return {k: decode(v, tensors) for k, v in value}
        if tag == "__counter__":
            return Counter({k: decode(v, tensors) for k, v in value})
        if tag == "__tuple__":
            return tuple(decode(v, tensors) for v in value)
        if tag == "__float__" and value in ("nan", "inf", "-inf"):
            return float(value)
    return {k: decode(v, tensors) for k, v in obj.items()}


def tensor_names(obj: Any) -> set[str]:
    """Every tensor key an encoded tree refers to."""
    if isinstance(obj, list):
        return set().union(*(tensor_names(v) for v in obj)) if obj else set()
    if not isinstance(obj, dict):
        return set()
    if set(obj) == {"__tensor__"}:
        return {obj["__tensor__"]}
    return set().union(*(tensor_names(v) for v in obj.values())) if obj else set()


def all_finite(tensors: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an Inf (CPU tensors; empty if none)."""
    return [
        name
        for name, t in tensors.items()
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())
    ]


__all__ = ["StateCodecError", "all_finite", "decode", "encode", "tensor_names"]
