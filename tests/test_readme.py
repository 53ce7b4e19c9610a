"""The README's test command is the one CI runs.

Its Python examples and ``ades`` commands are run and parsed, with every other
page's, by ``tests/docs/test_doc_snippets.py``.
"""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_test_command_is_what_ci_runs():
    readme = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    command = 'python -m pip install -e ".[test]" && python -m pip install --no-deps torchattacks==3.5.1 && python -m pytest -q'
    assert command in readme and command in ci
