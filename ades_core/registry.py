"""Named registries of component factories, and entry-point plugin discovery.

A :class:`Registry` maps a name to a *factory*: a callable that the builder
calls with the typed config section of its family (see each registry's
docstring in :mod:`ades_core.registries`) and that returns an object satisfying
the family's protocol. Registration is a decorator or a plain call::

    @CUES.register("entropy", description="softmax entropy")
    def entropy_cue(options: CueOptions) -> CueExtractor: ...

Duplicates and unknown names raise :class:`RegistryError` (a ``KeyError`` and
``ValueError``) whose one-line message lists the names that are registered.

Each registry carries one typed metadata record per entry, of its family's
class (:mod:`ades_core.registry_info`): the keywords of ``register`` beyond
``description``/``paper``/``source`` are its fields (``DEFENSES.register("x",
factory, uses_cues=False)``), or ``info=DefenseInfo(...)`` passes the record
itself; an unknown field or a bad value is a :class:`RegistryError` at
registration, naming the accepted fields. Readers use ``entry.info.<field>``.

Third-party packages add components through one entry-point group per family
(``ades.cues``, ``ades.schedulers``, ``ades.attacks``, ``ades.defenses``,
``ades.backbones``); the entry point names a factory (or, for backbones, a
module that registers itself into timm). Set ``ADES_DISABLE_PLUGINS=1`` to
turn discovery off.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import attrs

from ades_core.registry_info import NoInfo
from ades_core.errors import AdesError

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the family's metadata record

PLUGINS_DISABLED_ENV = "ADES_DISABLE_PLUGINS"


class RegistryError(AdesError, KeyError, ValueError):
    """An unknown or duplicate name; the message is one self-contained line."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@attrs.frozen
class Entry(Generic[T, I]):
    """One registered component: its factory, its typed metadata and what `ades list` shows of it."""

    name: str
    factory: T
    description: str = ""
    paper: str = ""
    source: str = "ades"  # "ades" for built-ins, "dist==version" for plugins
    info: I = attrs.field(factory=NoInfo)  # type: ignore[assignment]


class Registry(Generic[T, I]):
    """A name -> factory map for one component family.

    Args:
        family: what the registry holds, singular ("cue", "defense"); used in errors.
        entry_point_group: the ``importlib.metadata`` group plugins register under.
        info: the family's metadata record, a frozen attrs class whose every field
            has a default (:mod:`ades_core.registry_info`); :class:`NoInfo` takes none.
    """

    def __init__(self, family: str, entry_point_group: str | None = None, *, info: type[I] = NoInfo) -> None:  # type: ignore[assignment]
        self.family = family
        self.entry_point_group = entry_point_group
        self.info_type = info
        self._entries: dict[str, Entry[T, I]] = {}

    def register(
        self,
        name: str,
        factory: T | None = None,
        *,
        description: str = "",
        paper: str = "",
        source: str = "ades",
        info: I | None = None,
        **fields: Any,
    ) -> Any:
        """Register ``factory`` under ``name``; without a factory, return a decorator.

        ``fields`` are the family's metadata (:attr:`info_type`), or ``info`` is the
        record itself (not both).

        Raises:
            RegistryError: ``name`` is taken, or the metadata is refused (an unknown
                field, a value of the wrong type); one line naming the accepted fields.
        """
        record = self.make_info(name, info, fields)

        def add(obj: T) -> T:
            if name in self._entries:
                raise RegistryError(
                    f"{self.family} {name!r} is already registered "
                    f"(by {self._entries[name].source}); choose another name"
                )
            self._entries[name] = Entry(name, obj, description, paper, source, record)
            return obj

        return add if factory is None else add(factory)

    def accepted_fields(self) -> list[str]:
        """The names of the metadata fields ``register`` takes for this family."""
        return [field.name for field in attrs.fields(self.info_type)]

    def make_info(self, name: str, info: I | None, fields: dict[str, Any]) -> I:
        """The metadata record of entry ``name``: ``info`` as given, or built from ``fields``."""
        accepted = ", ".join(self.accepted_fields()) or "(none)"
        if info is not None:
            if fields:
                raise RegistryError(f"{self.family} {name!r}: give info= or metadata fields, not both")
            if not isinstance(info, self.info_type):
                raise RegistryError(
                    f"{self.family} {name!r}: info must be a {self.info_type.__name__}, got {type(info).__name__}"
                )
            return info
        unknown = sorted(set(fields) - set(self.accepted_fields()))
        if unknown:
            raise RegistryError(
                f"{self.family} {name!r}: unknown metadata field(s) {', '.join(unknown)}; accepted: {accepted}"
            )
        try:
            return self.info_type(**fields)
        except (TypeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise RegistryError(f"{self.family} {name!r}: bad metadata ({first}); accepted: {accepted}") from None

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plugin reloads)."""
        self._entries.pop(name, None)

    def entry(self, name: str) -> Entry[T, I]:
        """The entry for ``name``; unknown names raise with the known ones listed."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.family} {name!r}; registered: {', '.join(self.names()) or '(none)'}"
            ) from None

    def get(self, name: str) -> T:
        """The factory registered under ``name``."""
        return self.entry(name).factory

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T, I]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded: reported, never swallowed."""

    group: str
    name: str
    distribution: str
    error: str

    def __str__(self) -> str:
        return (
            f"failed to load plugin {self.name!r} from dist {self.distribution!r} "
            f"(group {self.group}): {self.error}"
        )


def plugins_disabled() -> bool:
    return os.environ.get(PLUGINS_DISABLED_ENV, "").strip() not in ("", "0", "false")


def _dist_label(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown"
    return f"{dist.metadata['Name']}=={dist.version}"


def load_entry_points(
    registry: Registry[Any, Any],
    entry_points: list[metadata.EntryPoint] | None = None,
    *,
    validate: Callable[[Any], str | None] | None = None,
) -> list[PluginFailure]:
    """Load the plugins of ``registry``'s entry-point group into it.

    Each entry point must resolve to a factory; it is registered under the entry
    point's name with ``source`` set to its distribution. The factory may carry
    its registry metadata as an attribute ``ades_meta``, a dict with string
    keys: ``description`` and ``paper`` (shown by ``ades list``; the description
    defaults to the docstring's first line) and the fields of the family's
    record (:mod:`ades_core.registry_info`: ``learnable=True`` for a scheduler
    the builder must train; ``uses_cues``/``scheduler``/``awp`` for a defense;
    ``training=False`` for an evaluation-only attack); an unknown key fails the
    plugin by name. ``validate`` may return a
    reason to reject the loaded object. Failures are returned, not raised, so one
    broken plugin does not take the rest of the CLI down.
    """
    group = registry.entry_point_group
    if group is None:
        return []
    if entry_points is None:
        entry_points = list(metadata.entry_points(group=group))
    failures: list[PluginFailure] = []
    for ep in entry_points:
        label = _dist_label(ep)
        try:
            obj = ep.load()
            reason = validate(obj) if validate is not None else None
            if reason:
                raise TypeError(reason)
            meta = getattr(obj, "ades_meta", None) or {}
            if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
                raise TypeError(f"ades_meta must be a dict with string keys, got {meta!r}")
            meta = dict(meta)
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            description = str(meta.pop("description", doc[0] if doc else ""))
            paper = str(meta.pop("paper", ""))
            registry.register(ep.name, obj, description=description, paper=paper, source=label, **meta)
        except Exception as exc:  # noqa: BLE001 - reported by name, never swallowed
            failures.append(PluginFailure(group, ep.name, label, f"{type(exc).__name__}: {exc}"))
    return failures
