"""What a session hands to the listener: one output per consumed frame, plus Fatal when the stream breaks.

Every output carries the bytes it was decoded from (``raw``) so the listener can store each frame in
``raw_frames`` together with its outcome. The listener's contract:

* :class:`Reply` - send ``data`` now (handshake and negotiation answers); nothing to store but the frame.
* :class:`Telemetry` - store ``records`` (and ``raw``), commit, *then* send ``ack``. The codec never
  acknowledges by itself: the device deletes acknowledged data from its black box.
* :class:`CommandAnswer` - an answer to a server command; store it, nothing to send.
* :class:`KeepAlive` - a ping; nothing to send (useful for "last seen").
* :class:`Rejected` - a delimited frame that must not be answered (bad checksum, unknown or malformed
  message); count it by ``code``, store ``raw``; the device will resend. The connection stays open.
* :class:`Fatal` - the stream cannot be framed any further; close the connection. Later input is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .records import CanFrame, ExtraRecord, FlexRecord, LegacyRecord

__all__ = [
    "CommandAnswer",
    "DeviceVersion",
    "Fatal",
    "FatalCode",
    "KeepAlive",
    "Output",
    "RejectCode",
    "Rejected",
    "Reply",
    "ReplyKind",
    "Telemetry",
    "TelemetryKind",
]


class ReplyKind(StrEnum):
    """Why a :class:`Reply` is sent."""

    HANDSHAKE = "handshake"
    NEGOTIATION = "negotiation"


class TelemetryKind(StrEnum):
    """Which message a :class:`Telemetry` came from."""

    ARCHIVE = "A"  # FLEX ~A: black-box records
    EVENT = "T"  # FLEX ~T: out-of-turn alarm event
    CURRENT = "C"  # FLEX ~C: current state, not stored in the black box
    EXTRA_ARCHIVE = "E"  # FLEX 2.0 ~E: extra records
    EXTRA_EVENT = "X"  # FLEX 2.0 ~X: extra out-of-turn record
    LEGACY_SINGLE = "legacy_T"  # NTCB *>T: one F-format record
    LEGACY_ARCHIVE = "legacy_A"  # NTCB *>A: F-format records
    TEXT_POSITION = "text_A"  # text dialect ~A
    TEXT_CAN = "text_T"  # text dialect ~T (11-bit CAN)
    TEXT_CAN_EXTENDED = "text_X"  # text dialect ~X (29-bit CAN)
    TEXT_EVENT = "text_E"  # text dialect ~E


class RejectCode(StrEnum):
    """Bounded reasons for :class:`Rejected` (safe as a metrics label)."""

    BAD_CHECKSUM = "bad_checksum"
    BAD_FORMAT = "bad_format"
    UNKNOWN_MESSAGE = "unknown_message"
    UNSUPPORTED = "unsupported"
    TRUNCATED = "truncated"  # decode_frame() given an incomplete frame
    IMEI_MISMATCH = "imei_mismatch"


class FatalCode(StrEnum):
    """Bounded reasons for :class:`Fatal`."""

    BAD_START = "bad_start"  # a byte that cannot start any message
    BAD_HEADER = "bad_header"  # NTCB preamble or header checksum wrong: the length cannot be trusted
    UNKNOWN_FLEX_TYPE = "unknown_flex_type"
    NOT_NEGOTIATED = "not_negotiated"  # FLEX data before *>FLEX: its length is unknown
    TOO_LARGE = "too_large"  # frame over the size cap


@dataclass(frozen=True, slots=True)
class DeviceVersion:
    """The answer to ``*?V``: ``*#V:<model>:<firmware>:<dd.mm.yy>:<locale>``."""

    model: str
    firmware: str
    date: str  # as sent, dd.mm.yy
    locale: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``data`` to the device now."""

    data: bytes
    raw: bytes = field(repr=False)
    kind: ReplyKind


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Records to store; send ``ack`` only after they are committed."""

    kind: TelemetryKind
    records: Sequence[FlexRecord | ExtraRecord | LegacyRecord | CanFrame | Any]
    ack: bytes
    raw: bytes = field(repr=False)
    event_index: int | None = None  # ~T/~X event index (as echoed in the ack)


@dataclass(frozen=True, slots=True)
class CommandAnswer:
    """A device's answer to a server command (``*@...``) or query (``*#...``)."""

    text: str  # the body as text (binary payloads are reported via ``record``; non-ASCII bytes escaped)
    record: FlexRecord | None
    raw: bytes = field(repr=False)
    version: DeviceVersion | None = None  # parsed ``*#V`` answer


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A FLEX ping (0x7F) or an empty NTCB packet; no answer is expected."""

    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A delimited frame that gets no answer; the connection continues."""

    code: RejectCode
    reason: str
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Fatal:
    """The stream cannot be framed any further: close the connection."""

    code: FatalCode
    reason: str
    excerpt: bytes  # up to 32 bytes from where framing failed, for the log

    @property
    def raw(self) -> bytes:
        """Return the excerpt (Fatal has no complete frame to store)."""
        return self.excerpt


Output = Reply | Telemetry | CommandAnswer | KeepAlive | Rejected | Fatal
