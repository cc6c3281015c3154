"""A small hierarchy of domain errors, translated to exit codes and HTTP answers at the edges.

An error may carry a machine-readable `code` (`device_linked_elsewhere`, `weak_password`, ...): the API puts it
in its error body, so clients can react to the case without parsing the message.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error the server raises on purpose."""

    exit_code = 1
    default_code: str | None = None

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code


class ConfigError(FleetError):
    """The configuration is invalid or unsafe."""

    exit_code = 2


class DatabaseUnavailable(FleetError):
    """The database cannot be reached or started."""

    exit_code = 3


class NotFound(FleetError):
    """The requested object does not exist (or is not visible to the caller)."""

    default_code = "not_found"


class Conflict(FleetError):
    """The object already exists or the change contradicts the current state."""

    default_code = "conflict"


class InvalidInput(FleetError):
    """The caller gave a value that cannot be accepted."""

    default_code = "invalid_input"


class Forbidden(FleetError):
    """The caller may not do this (an owner acting on what only a superuser may change)."""

    default_code = "forbidden"
