"""No pickle anywhere: states and models load from safetensors and JSON only."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p
    for folder in ("ades_core", "ades_cli", "plugins")
    for p in (REPO / folder).rglob("*.py")
)
UNSAFE = re.compile(r"\b(import pickle|from pickle|import dill|import joblib|cloudpickle|pickle\.loads?)|allow_pickle=True")
TORCH_LOAD = re.compile(r"torch\.load\(([^)]*)\)")


def test_the_sources_are_there():
    assert len(SOURCES) > 20


def test_no_pickle_in_any_source():
    offenders = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in SOURCES for m in UNSAFE.finditer(p.read_text())]
    assert not offenders, offenders


def test_torch_load_only_with_weights_only():
    offenders = [
        f"{p.relative_to(REPO)}: {m.group(0)}"
        for p in SOURCES
        for m in TORCH_LOAD.finditer(p.read_text())
        if "weights_only=True" not in m.group(1)
    ]
    assert not offenders, offenders
