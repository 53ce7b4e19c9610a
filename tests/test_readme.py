"""The README's Python examples run as written (with the data folder pointed at the real copy)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_test_command_is_what_ci_runs():
    readme = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    command = 'python -m pip install -e ".[test]" && python -m pip install --no-deps torchattacks==3.5.1 && python -m pytest -q'
    assert command in readme and command in ci


@pytest.mark.slow
def test_readme_embedding_example_trains_and_writes_a_run(tmp_path, monkeypatch, cifar10_dir):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    code = blocks[0].replace("~/.cache/ades/cifar10-imagefolder", str(cifar10_dir))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the docs' own example
    assert (tmp_path / "runs" / "embedded" / "model.safetensors").is_file()
    assert 0.0 <= namespace["history"][-1]["test_pgd_acc"] <= 1.0

    exec(compile(blocks[1], "README.md", "exec"), namespace)  # noqa: S102
    assert not namespace["model"].training
