"""Decoding stored Teltonika frames again (``fleet redecode``): AVL packets need no state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet.protocol.base import Output, Rejected

from .avl import TELEMETRY_CODECS
from .session import TeltonikaSession

__all__ = ["TeltonikaRedecoder"]

_TELEMETRY_TYPES = frozenset(TELEMETRY_CODECS.values())
_STORED_IDENTITY = "000000000000000"


class TeltonikaRedecoder:
    """Decodes a device's stored AVL packets; other frames are skipped."""

    def __init__(self, state: Mapping[str, Any] | None = None, settings: Any = None) -> None:
        self.state = state

    def decode(self, frame_type: str | None, data: bytes) -> Output | None:
        if frame_type not in _TELEMETRY_TYPES:
            return None  # login, keep-alive, messages: nothing to store again
        if data[:4] != b"\x00\x00\x00\x00" or len(data) < 12:
            return None
        session = TeltonikaSession()
        session.imei = _STORED_IDENTITY  # stored frames come from an identified connection
        outputs = session.feed(data)
        if len(outputs) == 1:
            return outputs[0]
        return Rejected("bad_format", "not one whole frame", data)
