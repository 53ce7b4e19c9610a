"""Capture and restore every random generator a run draws from.

A training step draws from torch's global CPU generator (PGD's random start,
dropout, the MC-dropout cue) or, on CUDA, from the device generators; the
data order and augmentation have their own generators, seeded from
``(seed, epoch)`` in :class:`~ades_core.data.DeviceLoader`. NumPy's and
Python's global generators are not used by ades itself, but a plugin may
draw from them, so they are kept too: a resumed run draws exactly the
numbers the uninterrupted run would have drawn.

The captured state is a tree of tensors, ints and floats that
:mod:`ades_core.engine.runfolder.state_codec` stores without pickle.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The states of torch's CPU generator, ``device``'s CUDA generators, NumPy's and Python's.

    Returns a dict of uint8/int64 tensors and plain numbers.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if device.type == "cuda":
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> list[str]:
    """Set every generator to ``state``; return notes on what could not be restored.

    CUDA states are restored only when the run is resumed on CUDA with at
    least as many devices; otherwise a note says the continuation will draw
    different numbers there.
    """
    notes: list[str] = []
    torch.set_rng_state(state["torch_cpu"].to(torch.uint8))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"].tolist()), python_state["gauss_next"])
    )
    cuda_states = state.get("torch_cuda")
    if device.type == "cuda":
        if cuda_states and len(cuda_states) <= torch.cuda.device_count():
            for index, cuda_state in enumerate(cuda_states):
                torch.cuda.set_rng_state(cuda_state.to(torch.uint8), index)
        else:
            notes.append(
                "the saved state has no CUDA generator states for this device; CUDA draws will differ"
            )
    elif cuda_states:
        notes.append("the run was saved on CUDA and resumes on the CPU; random draws will differ")
    return notes


__all__ = ["capture_rng", "restore_rng"]
