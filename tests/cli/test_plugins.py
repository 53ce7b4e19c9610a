"""Plugins that break are reported by name and distribution; the rest of the CLI keeps working."""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import types

import pytest
from click.testing import CliRunner

import ades_core
from ades_cli.main import cli
from ades_core import CUES, BuildError, RunConfig, build_defense
from ades_core.plugins import load_plugins
from ades_core.registry import PluginFailure, load_entry_points
from ades_core.registry_info import SchedulerInfo
from tests.cli.tiny_runs import GOOD, TINY_RUN, write_images

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)


class _FakeDist:
    """Just what ``ades`` reads of a distribution: its name and version."""

    metadata = {"Name": "ades-fake-cues"}
    version = "0.3.1"


def _entry_point(name: str, value: str) -> metadata.EntryPoint:
    ep = metadata.EntryPoint(name, value, "ades.cues")
    return ep._for(_FakeDist()) if hasattr(ep, "_for") else ep


class NoName:
    """A cue without a ``name``: callable, but not a CueExtractor."""

    def __call__(self, ctx):
        return ctx.x.new_zeros(ctx.x.shape[0])


def _no_name_factory(options):
    """A cue factory returning an object without ``name``."""
    return NoName()


def _exploding_factory(options):
    """A cue factory that raises."""
    raise RuntimeError("model weights not found")


@pytest.fixture
def fake_plugins(monkeypatch):
    module = types.ModuleType("ades_fake_cues")
    module.no_name = _no_name_factory
    module.exploding = _exploding_factory
    monkeypatch.setitem(sys.modules, "ades_fake_cues", module)
    eps = [
        _entry_point("noname", "ades_fake_cues:no_name"),
        _entry_point("exploding", "ades_fake_cues:exploding"),
        _entry_point("missing", "ades_fake_cues_not_installed:factory"),
    ]
    failures = load_entry_points(CUES, eps, validate=lambda obj: None if callable(obj) else "not callable")
    monkeypatch.setattr(ades_core, "PLUGIN_FAILURES", list(failures))
    yield failures
    for name in ("noname", "exploding"):
        CUES.unregister(name)


def test_a_plugin_that_fails_to_import_is_named_with_its_distribution(fake_plugins):
    (failure,) = fake_plugins
    assert failure.name == "missing" and failure.distribution == "ades-fake-cues==0.3.1"
    assert str(failure).startswith("failed to load plugin 'missing' from dist 'ades-fake-cues==0.3.1'")
    assert CUES.entry("noname").source == "ades-fake-cues==0.3.1"


def test_a_plugin_object_that_breaks_the_protocol_is_caught_at_build_time(fake_plugins):
    config = RunConfig.from_dict({"cues": {"names": "grad,noname"}})
    with pytest.raises(BuildError) as info:
        build_defense(config)
    assert str(info.value) == (
        "cue 'noname' from plugin ades-fake-cues==0.3.1 built a NoName, which does not satisfy "
        "the CueExtractor protocol (missing: name)"
    )


def test_a_plugin_factory_that_raises_is_named(fake_plugins):
    with pytest.raises(BuildError, match=r"^cue 'exploding' from plugin ades-fake-cues==0.3.1 failed to "
                       r"build: RuntimeError: model weights not found$"):
        build_defense(RunConfig.from_dict({"cues": {"names": "exploding"}}))


def test_list_warns_on_stderr_and_still_lists(fake_plugins):
    result = CliRunner().invoke(cli, ["list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "warning: failed to load plugin 'missing' from dist 'ades-fake-cues==0.3.1'" in result.stderr
    assert "ModuleNotFoundError" in result.stderr
    assert "noname" in result.stdout and "ades-fake-cues==0.3.1" in result.stdout
    assert "pgd-at" in result.stdout


def test_run_warns_on_stderr_and_trains(fake_plugins, tmp_path):
    data = write_images(tmp_path / "data", GOOD)
    result = CliRunner().invoke(cli, ["run", *TINY_RUN, "--data-dir", str(data), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "warning: failed to load plugin 'missing'" in result.stderr
    assert "done:" in result.stdout


def test_run_with_a_broken_plugin_cue_is_one_line(fake_plugins, tmp_path):
    data = write_images(tmp_path / "data", GOOD)
    args = ["run", *TINY_RUN[2:], "--defense", "ades", "--cue", "entropy,noname", "--data-dir", str(data),
            "--out", str(tmp_path / "r")]  # fmt: skip
    result = CliRunner().invoke(cli, args, terminal_width=400)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert errors == [
        "Error: cue 'noname' from plugin ades-fake-cues==0.3.1 built a NoName, which does not satisfy "
        "the CueExtractor protocol (missing: name)"
    ]


def test_discovery_can_be_turned_off(monkeypatch):
    def no_discovery(**kwargs):
        raise AssertionError("entry points were read although plugins are disabled")

    monkeypatch.setenv("ADES_DISABLE_PLUGINS", "1")
    monkeypatch.setattr(metadata, "entry_points", no_discovery)
    assert load_plugins() == []


def test_plugin_failure_reads_as_one_line():
    failure = PluginFailure("ades.cues", "x", "d==1", "ImportError: no module named y")
    assert "\n" not in str(failure)


def test_a_plugin_declares_its_registry_metadata_with_ades_meta(monkeypatch):
    from ades_core import SCHEDULERS
    from ades_core.schedulers.mlp import mlp_scheduler

    def learnable_plugin(options, *, num_cues, budget, allocation):
        """A plugin MLP scheduler."""
        return mlp_scheduler(options, num_cues=num_cues, budget=budget, allocation=allocation)

    learnable_plugin.ades_meta = {"learnable": True, "paper": "Plugin et al. 2026"}
    module = types.ModuleType("ades_fake_schedulers")
    module.learnable = learnable_plugin
    monkeypatch.setitem(sys.modules, "ades_fake_schedulers", module)
    ep = metadata.EntryPoint("plugin-mlp", "ades_fake_schedulers:learnable", "ades.schedulers")
    ep = ep._for(_FakeDist()) if hasattr(ep, "_for") else ep
    try:
        assert load_entry_points(SCHEDULERS, [ep]) == []
        entry = SCHEDULERS.entry("plugin-mlp")
        assert entry.info == SchedulerInfo(learnable=True)
        assert (entry.paper, entry.description) == ("Plugin et al. 2026", "A plugin MLP scheduler.")
        config = RunConfig.from_dict({"defense": "ades", "scheduler": {"name": "plugin-mlp"}})
        defense = build_defense(config)  # ades refuses a scheduler that is not learnable
        assert any(p.requires_grad for p in defense.parameters())
    finally:
        SCHEDULERS.unregister("plugin-mlp")


def test_ades_meta_that_is_not_a_dict_is_a_named_failure(monkeypatch):
    def factory(options):
        return None

    factory.ades_meta = ["learnable"]
    module = types.ModuleType("ades_fake_meta")
    module.factory = factory
    monkeypatch.setitem(sys.modules, "ades_fake_meta", module)
    (failure,) = load_entry_points(CUES, [_entry_point("badmeta", "ades_fake_meta:factory")])
    assert "ades_meta must be a dict" in failure.error and "ades-fake-cues==0.3.1" in str(failure)
    assert "badmeta" not in CUES
