"""The facts of a config field's ``ades run`` option, kept in the field's attrs ``metadata``.

A config field that ``ades run`` sets carries ``metadata=cli("help text", ...)``;
:mod:`ades_cli.options` generates the click option from it and the field
(its type, its default), so each option has one home::

    steps: int = attrs.field(default=10, validator=_int_at_least(1), metadata=cli("PGD steps during training."))

The option is ``--`` + ``name`` (default: the field's name, underscores as
dashes); a ``bool`` field is a ``--x/--no-x`` flag. The help text does not
state the default: it is generated from the field's (``show_default=False``
where the text explains a default that depends on other settings). Nothing
here imports click.
"""

from __future__ import annotations

from typing import Any

import attrs

CLI_KEY = "ades.cli"
"""The key of a field's :class:`CliOption` in its attrs ``metadata``."""

KINDS = ("eps", "lam", "comma_list", "positive_int", "text", "path")
"""Parameter types beyond the field's annotation: a budget (``8/255``), ``lam`` (a budget that is
never negative), a comma list, an integer >= 1, text passed to the field's converter as it is,
a filesystem path."""


@attrs.frozen(kw_only=True)
class CliOption:
    """``help``: one or two sentences, without the default. ``name``: the option's name without
    ``--`` when it is not the field's. ``kind``: one of :data:`KINDS`, else the field's annotation
    decides (int, float, str, bool, Path). ``choices``: the accepted values, shown and checked by
    the command line. ``show_default``: append ``(default: X)`` from the field's default."""

    help: str = attrs.field(validator=attrs.validators.instance_of(str))
    name: str | None = None
    kind: str | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.in_(KINDS)))
    choices: tuple[str, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
    show_default: bool = True


def cli(help: str, **facts: Any) -> dict[str, CliOption]:
    """The ``metadata=`` of a config field that ``ades run`` sets (see :class:`CliOption`)."""
    return {CLI_KEY: CliOption(help=help, **facts)}


def cli_option(field: attrs.Attribute) -> CliOption | None:
    """The :class:`CliOption` of ``field``, or ``None`` for a field the command line does not set."""
    return field.metadata.get(CLI_KEY)


__all__ = ["CLI_KEY", "KINDS", "CliOption", "cli", "cli_option"]
