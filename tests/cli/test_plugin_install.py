"""The margin plugin, built and installed into a temporary folder, is found through its entry point.

The plugin is built by pip with its own build backend (setuptools, already
installed here: ``--no-build-isolation``, nothing downloaded) from a copy of
its source (the build writes ``build/`` and ``*.egg-info`` into the source
folder), and installed with ``--target`` into a temporary folder, never into
this environment: other tests assert the exact set of built-in cues. The
folder is put on ``PYTHONPATH`` of subprocesses, where ``importlib.metadata``
finds the plugin's ``dist-info`` and entry point as for any installed package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import ades_core
from tests.cli.tiny_runs import GOOD, TINY_RUN, write_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"),
]

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "ades-cue-margin"
DISTRIBUTION = "ades-cue-margin==0.1.0"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A folder holding the installed plugin: its package and its ``dist-info``."""
    build_system = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["build-system"]
    assert build_system["build-backend"] == "setuptools.build_meta", build_system
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("the plugin's build backend, setuptools, is not installed (pip install setuptools)")
    root = tmp_path_factory.mktemp("margin-plugin")
    source = root / "source"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    command = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--quiet", "--target", str(site), str(source),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "ades_cue_margin" / "__init__.py").is_file()
    return site


def _ades(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m ades_cli ARGS`` with the plugin's folder on ``PYTHONPATH``."""
    paths = [str(site), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "COLUMNS": "250"}
    env.pop("ADES_DISABLE_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "ades_cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_test_session_sees_only_built_in_components():
    # tests/conftest.py disables entry points in the test process, so an installed plugin cannot
    # change the exact registered sets other tests assert; the subprocesses below re-enable them
    assert "margin" not in ades_core.CUES
    assert all(entry.source == "ades" for entry in ades_core.CUES.entries())


def test_ades_list_shows_the_plugin_with_its_distribution_and_version(plugin_site, tmp_path):
    result = _ades(["list"], plugin_site, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.split()[:1] == ["margin"]]
    assert DISTRIBUTION in line
    assert "Logit margin between the true class and the best other class" in line  # the factory's docstring


def test_a_run_with_the_plugin_cue_trains(plugin_site, tmp_path):
    data = write_images(tmp_path / "data", GOOD)
    out = tmp_path / "run"
    args = ["run", *TINY_RUN[2:], "--defense", "ades", "--cue", "grad,entropy,margin", "--data-dir", str(data),
            "--out", str(out)]  # fmt: skip
    result = _ades(args, plugin_site, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done:" in result.stdout
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert resolved["cues"] == ["grad", "entropy", "margin"]
    assert (out / "model.safetensors").is_file()
