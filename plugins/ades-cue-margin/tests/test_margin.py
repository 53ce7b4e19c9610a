"""The margin plugin: its value by hand, its protocol, and its discovery through the entry point."""

from __future__ import annotations

import importlib.metadata as metadata
import tomllib
from pathlib import Path

import pytest
import torch

from ades_core.config import CueOptions
from ades_core.protocols import CueContext, CueExtractor
from ades_core.registry import Registry, load_entry_points
from ades_cue_margin import LogitMargin, logit_margin, margin_cue

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_margin_is_true_logit_minus_best_other_logit():
    logits = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, -1.0]])
    y = torch.tensor([0, 2])
    torch.testing.assert_close(logit_margin(logits, y), torch.tensor([1.0, -4.0]))


def test_margin_cue_reads_the_shared_clean_logits():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(5, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1])
    ctx = CueContext(model, x, y)
    value = LogitMargin()(ctx)
    torch.testing.assert_close(value, logit_margin(model(x).detach(), y))
    assert isinstance(margin_cue(CueOptions()), CueExtractor)


def test_the_entry_point_declared_in_pyproject_registers_the_cue():
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]["ades.cues"]
    assert declared == {"margin": "ades_cue_margin:margin_cue"}
    registry = Registry("cue", "ades.cues")
    entry_points = [metadata.EntryPoint(n, v, "ades.cues") for n, v in declared.items()]
    assert load_entry_points(registry, entry_points) == []
    assert registry.names() == ["margin"]
    assert isinstance(registry.build("margin", CueOptions()), LogitMargin)


def test_when_installed_ades_lists_it_with_its_distribution():
    try:
        metadata.distribution("ades-cue-margin")
    except metadata.PackageNotFoundError:
        pytest.skip("ades-cue-margin is not installed in this environment")
    import ades_core

    entry = ades_core.CUES.entry("margin")
    assert entry.source == "ades-cue-margin==0.1.0"
