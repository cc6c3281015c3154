"""What a session hands to the listener: one output per consumed frame, plus Fatal when the stream breaks.

The output classes are the protocol-neutral ones of :mod:`fleet.protocol.base`; this module adds the
Navtelecom labels (reply, telemetry, reject and fatal kinds). The listener sees the handshake ``Reply`` as
an :class:`fleet.protocol.base.Identify` (see ``codec.NavtelecomCodec``).

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

from dataclasses import dataclass
from enum import StrEnum

from fleet.protocol.base import CommandAnswer, Fatal, KeepAlive, Rejected, Reply, Telemetry

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


Output = Reply | Telemetry | CommandAnswer | KeepAlive | Rejected | Fatal
