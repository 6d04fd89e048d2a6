"""Exceptions that reach the user: each carries a message that says what went wrong and what to do."""

from __future__ import annotations


class PreftuneError(Exception):
    """Base of every error preftune raises for a user mistake; the CLI prints its message, not a traceback."""


class ConfigError(PreftuneError):
    """A configuration file or override is invalid: names the key, the value and what is allowed."""


class DataError(PreftuneError):
    """Preference data could not be read or is invalid: names the file, line, field and fix."""


class ModelError(PreftuneError):
    """A model could not be loaded or set up as asked."""


class JudgeError(PreftuneError):
    """A judge could not be loaded, or failed or answered out of range on a response."""
