"""docs/architecture.md's module map is the code's: regenerate it with scripts/module_map.py --write."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("module_map", ROOT / "scripts" / "module_map.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_architecture_doc_lists_every_module_as_it_is():
    generator = _generator()
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert generator.rewrite(text, generator.module_map()) == text, (
        "docs/architecture.md's module map is out of date: run python scripts/module_map.py --write"
    )


def test_every_module_has_a_docstring():
    generator = _generator()
    missing = [line for line in generator.module_map().splitlines() if line.endswith("(no docstring)")]
    assert missing == []
