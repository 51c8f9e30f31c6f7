"""Exceptions meant for the user. The CLI turns them into one-line messages, the server into HTTP errors."""

from __future__ import annotations

__all__ = ["DeidError", "ConfigError", "InputError", "ModelError"]


class DeidError(Exception):
    """Base class of every error deid reports to a user (the ``UserError`` of stylegan2-ada)."""


class ConfigError(DeidError, ValueError):
    """A configuration value is out of range or inconsistent."""


class InputError(DeidError):
    """A file the user gave cannot be read: corrupt, truncated, empty, not an image, too large.

    The message always names the file and the cause, on one line.
    """

    def __init__(self, path: object, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class ModelError(DeidError):
    """A weights file is missing, malformed, or does not fit the network it is loaded into."""
