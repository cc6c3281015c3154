"""A small hierarchy of domain errors, translated to exit codes and HTTP answers at the edges."""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error the server raises on purpose."""

    exit_code = 1


class ConfigError(FleetError):
    """The configuration is invalid or unsafe."""

    exit_code = 2


class DatabaseUnavailable(FleetError):
    """The database cannot be reached or started."""

    exit_code = 3


class NotFound(FleetError):
    """The requested object does not exist (or is not visible to the caller)."""


class Conflict(FleetError):
    """The object already exists or the change contradicts the current state."""


class InvalidInput(FleetError):
    """The caller gave a value that cannot be accepted."""
