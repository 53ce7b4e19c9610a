"""How a command reports a user's mistake: an :class:`~ades_core.errors.AdesError` as one line.

Every command catches :class:`~ades_core.errors.AdesError` (and lets click's
own exceptions through) and nothing else: a ``TypeError`` or ``KeyError`` from
inside the code is a programming error and leaves with its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from ades_core.errors import AdesError


def one_line(exc: AdesError) -> click.ClickException:
    """``Error: <the first line of exc>``, exit status 1."""
    return click.ClickException(exc.one_line())


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn an :class:`AdesError` raised inside into one ``Error:`` line; anything else passes unchanged."""
    try:
        yield
    except AdesError as exc:
        raise one_line(exc) from None


__all__ = ["AdesError", "one_line", "user_errors"]
