"""Third-party components through entry points, one group per family.

===================  ==============================================
group                the entry point names
===================  ==============================================
``ades.cues``        a cue factory ``(options: CueOptions) -> CueExtractor``
``ades.schedulers``  a scheduler factory (see ``SCHEDULERS``)
``ades.attacks``     an attack factory (see ``ATTACKS``)
``ades.defenses``    a defense factory ``(parts: DefenseParts) -> Defense``
``ades.backbones``   a module that registers models into timm on import
===================  ==============================================

Discovery runs once, when :mod:`ades_core` is imported, unless
``ADES_DISABLE_PLUGINS=1`` (then no entry point is read). A plugin that fails
to import or is not callable is recorded in :data:`PLUGIN_FAILURES` with its
name and distribution (``ades list`` and ``ades run`` print them as warnings on
stderr) and skipped; the rest keeps working. A plugin whose factory builds an
object that does not satisfy its protocol, or raises, is caught by the builder
with an error naming the plugin and its distribution.
"""

from __future__ import annotations

import importlib.metadata as metadata

from ades_core.registries import ATTACKS, CUES, DEFENSES, SCHEDULER_OBJECTIVES, SCHEDULERS
from ades_core.registry import PluginFailure, load_entry_points, plugins_disabled

BACKBONE_GROUP = "ades.backbones"
PLUGIN_FAILURES: list[PluginFailure] = []
LOADED_BACKBONE_PLUGINS: list[str] = []


def _callable(obj: object) -> str | None:
    return None if callable(obj) else f"entry point must name a factory, got {type(obj).__name__}"


def load_plugins() -> list[PluginFailure]:
    """Discover and register every installed plugin; return (and record) the failures."""
    if plugins_disabled():
        return []
    failures: list[PluginFailure] = []
    for registry in (CUES, SCHEDULERS, SCHEDULER_OBJECTIVES, ATTACKS, DEFENSES):
        failures += load_entry_points(registry, validate=_callable)
    for ep in metadata.entry_points(group=BACKBONE_GROUP):
        try:
            ep.load()
            LOADED_BACKBONE_PLUGINS.append(ep.name)
        except Exception as exc:  # noqa: BLE001 - reported, never swallowed
            dist = f"{ep.dist.metadata['Name']}=={ep.dist.version}" if ep.dist else "unknown"
            failures.append(PluginFailure(BACKBONE_GROUP, ep.name, dist, f"{type(exc).__name__}: {exc}"))
    PLUGIN_FAILURES.extend(failures)
    return failures
