"""Click parameter types, and the options of ``ades run`` generated from the config fields' metadata.

Each config field that ``ades run`` sets says so in its attrs ``metadata``
(:mod:`ades_core.cli_metadata`); :data:`RUN_OPTIONS` are generated from those
fields, and the option -> field map (:data:`RUN_OPTION_FIELDS`,
:func:`option_for_field`) from the same, so each option has one home.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import click

from ades_core.cli_metadata import CliOption, cli_option
from ades_core.config import format_eps, parse_comma_list, parse_lam, parse_non_negative_budget


class EpsType(click.ParamType):
    """A budget >= 0: ``8/255`` or ``0.0314`` (L-inf pixel scale), ``0.5`` (L2 radius).

    Its range depends on ``--norm``, which the command checks once both are
    known (the config for ``ades run``, the evaluation for ``ades eval``).
    """

    name = "eps"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_non_negative_budget(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class LamType(EpsType):
    """The width of the adaptive budget range, ``lam``: a budget, and never negative."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float) and value >= 0:
            return value
        try:
            return parse_lam(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class CommaList(click.ParamType):
    """``a,b,c`` -> ``("a", "b", "c")``; an empty value or an empty item (``a,,b``) is refused."""

    name = "list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_comma_list(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


EPS = EpsType()
LAM = LamType()
COMMA_LIST = CommaList()

_KIND_TYPES: dict[str, Any] = {
    "eps": EPS,
    "lam": LAM,
    "comma_list": COMMA_LIST,
    "positive_int": click.IntRange(min=1),
    "text": None,
    "path": click.Path(path_type=Path),
}
"""The click type of each :data:`~ades_core.cli_metadata.KINDS` (``None``: text)."""

@attrs.frozen
class RunOption:
    """One generated option of ``ades run``: the config field it sets and its :class:`CliOption`.

    ``section``: the ``RunConfig`` section (``None`` for a top-level field); ``field``: the
    attrs field; ``param``: click's parameter name (the option's name with underscores).
    """

    section: str | None
    field: attrs.Attribute
    facts: CliOption

    @property
    def name(self) -> str:
        """The option's long name without ``--`` (``eps-min``)."""
        return self.facts.name or self.field.name.replace("_", "-")

    @property
    def param(self) -> str:
        return self.name.replace("-", "_")

    @property
    def path(self) -> str:
        """The dotted config field (``budget.eps_min``, ``seed``)."""
        return self.field.name if self.section is None else f"{self.section}.{self.field.name}"

    def click_option(self) -> Any:
        """The click decorator of this option; its default is "not given" (``None``) so presets apply."""
        help_text = self.facts.help + _default_text(self.field, self.facts)
        if _annotation(self.field) == "bool":
            flag = f"--{self.name}/--no-{self.name}"
            return click.option(flag, self.param, default=None, help=help_text)
        return click.option(f"--{self.name}", self.param, type=_param_type(self.field, self.facts), help=help_text)


def _annotation(field: attrs.Attribute) -> str:
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))


_ANNOTATION_TYPES: dict[str, Any] = {"int": int, "int | None": int, "float": float, "float | None": float, "str": None, "str | None": None}
"""Click types of the field annotations an option may have without a ``kind`` (``None``: text)."""


def _param_type(field: attrs.Attribute, facts: CliOption) -> Any:
    if facts.choices is not None:
        return click.Choice(list(facts.choices))
    if facts.kind is not None:
        return _KIND_TYPES[facts.kind]
    annotation = _annotation(field)
    if annotation not in _ANNOTATION_TYPES:
        raise TypeError(f"config field {field.name!r} ({annotation}) needs a CLI kind: one of {', '.join(_KIND_TYPES)}")
    return _ANNOTATION_TYPES[annotation]


def _default_text(field: attrs.Attribute, facts: CliOption) -> str:
    """`` (default: X)`` from the field's default; empty where there is none to show."""
    default = field.default
    if not facts.show_default or default is None or isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return ""
    if isinstance(default, bool):
        name = facts.name or field.name.replace("_", "-")
        shown = f"--{name}" if default else f"--no-{name}"
    elif facts.kind in ("eps", "lam"):
        shown = format_eps(default)
    elif isinstance(default, tuple):
        shown = ",".join(str(item) for item in default)
    elif isinstance(default, float):
        shown = f"{default:g}"
    else:
        shown = str(default)
    return f" (default: {shown})"


def run_options() -> list[RunOption]:
    """Every ``ades run`` option generated from the config, in the order of ``RunConfig``'s fields
    (a section's in the order of its own): the fields whose metadata has a :class:`CliOption`."""
    from ades_core.config.run import SECTIONS, RunConfig

    found: list[RunOption] = []
    for top in attrs.fields(RunConfig):
        section = SECTIONS.get(top.name)
        for field in attrs.fields(section) if section is not None else (top,):
            facts = cli_option(field)
            if facts is not None:
                found.append(RunOption(top.name if section is not None else None, field, facts))
    return found


RUN_OPTIONS: tuple[RunOption, ...] = tuple(run_options())
"""The generated options of ``ades run``."""

RUN_OPTION_FIELDS: dict[str, tuple[str | None, str]] = {o.param: (o.section, o.field.name) for o in RUN_OPTIONS}
"""click parameter name -> (config section or ``None`` for top level, field name)."""

_OPTION_BY_FIELD: dict[str, str] = {o.path: f"--{o.name}" for o in RUN_OPTIONS}


def option_for_field(field: str) -> str | None:
    """The ``ades run`` option that sets config field ``field`` (``"attack.steps"`` -> ``"--steps"``)."""
    return _OPTION_BY_FIELD.get(field)


def config_options(fn: Any) -> Any:
    """Decorate ``fn`` with every generated option of :data:`RUN_OPTIONS`, in their order."""
    for option in reversed(RUN_OPTIONS):
        fn = option.click_option()(fn)
    return fn


def overrides_from_options(options: dict[str, Any]) -> dict[str, Any]:
    """The nested config dict of the options that were given (``None`` = not given)."""
    nested: dict[str, Any] = {}
    for option, value in options.items():
        if value is None or option not in RUN_OPTION_FIELDS:
            continue
        section, field = RUN_OPTION_FIELDS[option]
        if section is None:
            nested[field] = value
        else:
            nested.setdefault(section, {})[field] = value
    return nested


__all__ = [
    "COMMA_LIST",
    "EPS",
    "LAM",
    "RUN_OPTIONS",
    "RUN_OPTION_FIELDS",
    "RunOption",
    "config_options",
    "format_eps",
    "option_for_field",
    "overrides_from_options",
    "run_options",
]
