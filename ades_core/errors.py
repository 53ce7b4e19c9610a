"""The one base class of user errors, and what the command line does with it.

An :class:`AdesError` is a mistake in the user's input (an option, a file, a
folder, a missing optional package): the ``ades`` commands show its message
as one ``Error: ...`` line and exit with status 1, without a traceback.
Anything else that escapes a command (a ``TypeError`` or ``KeyError`` inside
the code) is a programming error and keeps its traceback.

Every user-facing error class of the package derives from :class:`AdesError`
and keeps the builtin base it had (``ConfigError`` is still a ``ValueError``,
``RegistryError`` still a ``KeyError``), so a library caller that catches the
builtin keeps working. A third-party or builtin exception that means bad
input (the ``FileNotFoundError`` of a path the user gave) is converted into
an :class:`AdesError` where it is raised, naming what was given and what is
accepted.

This module imports nothing from the package: any module may raise these.
"""

from __future__ import annotations


class AdesError(Exception):
    """A mistake in the user's input: one line, no traceback.

    The message says what is wrong and what is accepted; the ``ades``
    commands print its first line as ``Error: <message>`` and exit with 1.
    """

    def one_line(self) -> str:
        """The first non-empty line of the message (the class name when there is none)."""
        text = str(self).strip()
        return text.splitlines()[0] if text else type(self).__name__


class InputError(AdesError, ValueError):
    """A value or file the user gave that cannot be used, where no more specific class applies.

    A ``ValueError`` too, so that callers catching ``ValueError`` keep working.
    """


__all__ = ["AdesError", "InputError"]
