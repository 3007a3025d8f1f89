"""Errors the engine raises for problems a user can fix.

Every message follows one grammar: what was found, what is required, and
what to do about it. The command line prints the message on one line and
exits non-zero; the app shows it as an error box. Anything that is not a
``TLError`` is a bug in this package and keeps its traceback.
"""

from __future__ import annotations


class TLError(Exception):
    """Base class for problems the user can fix (bad data, bad options, missing files).

    Attributes:
        command_line: What only the command line can do about it (an option to pass), which the command
            line adds to the message; the message itself names no option, since the app shows it too.
    """

    command_line: str = ""


class DataError(TLError):
    """The dataset folder cannot be used as it is."""


class ConfigError(TLError):
    """An option has a value that is not allowed."""


class WeightsError(TLError):
    """Pretrained weights could not be found, downloaded or loaded."""


class RunError(TLError):
    """A run folder is missing, incomplete or does not match the request."""
