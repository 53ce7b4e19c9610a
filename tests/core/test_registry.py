"""Registries: names in, factories out; unknown and duplicate names explained; plugins found."""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import types

import pytest

from ades_core.registry import Registry, RegistryError, load_entry_points, plugins_disabled


def test_register_as_decorator_and_call():
    registry = Registry("widget")

    @registry.register("a", description="first")
    def make_a():
        return "A"

    registry.register("b", lambda: "B")
    assert registry.names() == ["a", "b"]
    assert registry.build("a") == "A" and registry.get("b")() == "B"
    assert "a" in registry and "c" not in registry
    assert registry.entry("a").description == "first"


def test_unknown_name_lists_the_registered_names():
    registry = Registry("widget")
    registry.register("alpha", object)
    registry.register("beta", object)
    with pytest.raises(RegistryError, match=r"^unknown widget 'gamma'; registered: alpha, beta$"):
        registry.get("gamma")


def test_duplicates_are_an_error_not_an_assert():
    registry = Registry("widget")
    registry.register("a", object)
    with pytest.raises(RegistryError, match="already registered"):
        registry.register("a", object)


def _fake_module(monkeypatch, name, **attrs):
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


def test_entry_points_register_good_plugins_and_report_broken_ones(monkeypatch):
    def margin_factory(options):
        """Logit margin cue."""
        return options

    _fake_module(monkeypatch, "fake_plugin_ok", factory=margin_factory, not_callable=42)
    registry = Registry("cue", "ades.cues")
    eps = [
        metadata.EntryPoint("margin", "fake_plugin_ok:factory", "ades.cues"),
        metadata.EntryPoint("broken", "fake_plugin_missing_module:factory", "ades.cues"),
        metadata.EntryPoint("bad", "fake_plugin_ok:not_callable", "ades.cues"),
    ]
    failures = load_entry_points(
        registry, eps, validate=lambda obj: None if callable(obj) else "not a factory"
    )
    assert registry.names() == ["margin"]
    assert registry.entry("margin").description == "Logit margin cue."
    assert [f.name for f in failures] == ["broken", "bad"]
    assert "failed to load plugin 'broken'" in str(failures[0])
    assert "ModuleNotFoundError" in failures[0].error
    assert "not a factory" in failures[1].error


def test_plugin_discovery_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("ADES_DISABLE_PLUGINS", "1")
    assert plugins_disabled()
    monkeypatch.setenv("ADES_DISABLE_PLUGINS", "0")
    assert not plugins_disabled()
