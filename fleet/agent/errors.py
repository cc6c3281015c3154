"""The agent's error hierarchy; the HTTP layer renders each one as ``{"error": {"code", "message"}}``."""

from __future__ import annotations


class AgentError(Exception):
    """Base class of every error the agent raises on purpose."""


class ApiError(AgentError):
    """A request the agent refuses, with the HTTP status and the contract's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class BadRequest(ApiError):
    """A malformed query parameter or body (HTTP 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


class PayloadTooLarge(ApiError):
    """An ingest body over the configured byte, row or alarm cap (HTTP 413)."""

    def __init__(self, message: str) -> None:
        super().__init__(413, "payload_too_large", message)


class StoreUnavailable(AgentError):
    """The local SQLite buffer cannot be read or written (rendered as HTTP 503 ``db_unavailable``)."""


class UnknownChannel(AgentError):
    """Rows name channels that the buffer does not declare."""

    def __init__(self, channel_ids: list[int]) -> None:
        super().__init__(f"unknown channel_id(s): {', '.join(map(str, channel_ids))}")
        self.channel_ids = channel_ids
