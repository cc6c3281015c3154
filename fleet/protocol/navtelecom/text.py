"""The "seed 000" text dialect (SVOI-style ASCII frames) and dialect detection per connection.

This dialect is not Navtelecom's (spec §7): real trackers start every connection with an NTCB ``@``
packet. It is accepted only when a connection's first bytes are ``~`` + one of ``A T X E`` + a digit,
which NTCB can never produce, and it can be switched off (``DeviceSession(allow_text=False)``).

Frames, each between two ``~`` (at most :data:`MAX_TEXT_FRAME` bytes):

* ``~A{IMEI},{unix},{lat},{lon},{speed},{course},{sats},{hdop}~`` → :class:`TextPosition`, ack ``~AACK,{IMEI}~``
* ``~T{IMEI},{can_id},{b1},...,{b8}~`` (11-bit id, hex; a wider id is taken as 29-bit) → :class:`CanFrame`, ack ``~TACK,{IMEI}~``
* ``~X{IMEI},{can_id},{b1},...,{b8}~`` (29-bit id, hex) → :class:`CanFrame`, ack ``~XACK,{IMEI}~``
* ``~E{IMEI},{event_type},{unix},{description}~`` → :class:`TextEvent`, ack ``~EACK,{IMEI}~``

A frame with any invalid value is rejected whole (no partial record, no ack).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from .framing import MAX_FRAME_BYTES
from .outputs import Fatal, FatalCode, Output, RejectCode, Rejected, Telemetry, TelemetryKind
from .records import CanFrame
from .session import NavtelecomSession, SessionState

__all__ = [
    "MAX_TEXT_FRAME",
    "DeviceSession",
    "Dialect",
    "TextEvent",
    "TextPosition",
    "TextSession",
    "detect_dialect",
    "text_ack",
]

# The longest legitimate frame is an ~E event with a free-text description; 512 bytes leaves ample room
# for it and bounds what a connection that never sends the closing "~" can make us buffer.
MAX_TEXT_FRAME = 512
# Timestamps outside 2000-01-01 .. 2100-01-01 are treated as garbage rather than stored.
MIN_UNIX = 946_684_800
MAX_UNIX = 4_102_444_800
_IMEI = re.compile(r"\d{15}")
_INT = re.compile(r"\d{1,10}")
_DECIMAL = re.compile(r"-?\d{1,10}(?:\.\d{1,12})?")
_HEX_ID = re.compile(r"(?:0[xX])?[0-9A-Fa-f]{1,8}")
_HEX_BYTE = re.compile(r"[0-9A-Fa-f]{2}")
_WHITESPACE = b" \t\r\n"
_TILDE = 0x7E
_LETTERS = b"ATXE"
_MAX_STANDARD_ID = 0x7FF
_MAX_EXTENDED_ID = 0x1FFF_FFFF


class Dialect(StrEnum):
    """The wire dialect of a connection."""

    NTCB = "ntcb"
    TEXT = "text"


def detect_dialect(first_bytes: bytes) -> Dialect | None:
    """Return the dialect announced by a connection's first bytes, None when 3 bytes are needed to tell.

    Only ``~`` + ``A``/``T``/``X``/``E`` + digit is text; everything else (``@`` for real devices) is NTCB,
    whose session then reports anything invalid.
    """
    if not first_bytes:
        return None
    if first_bytes[0] != _TILDE:
        return Dialect.NTCB
    if len(first_bytes) < 2:
        return None
    if first_bytes[1] not in _LETTERS:
        return Dialect.NTCB
    if len(first_bytes) < 3:
        return None
    return Dialect.TEXT if 0x30 <= first_bytes[2] <= 0x39 else Dialect.NTCB


@dataclass(frozen=True, slots=True)
class TextPosition:
    """A text ``~A`` position."""

    imei: str
    time: datetime
    latitude: float
    longitude: float
    speed_kmh: float
    course: float
    satellites: int
    hdop: float


@dataclass(frozen=True, slots=True)
class TextEvent:
    """A text ``~E`` event."""

    imei: str
    event_type: int
    time: datetime
    description: str


def text_ack(letter: str, imei: str) -> bytes:
    """Return the text acknowledgement ``~{letter}ACK,{imei}~``."""
    return f"~{letter}ACK,{imei}~".encode("ascii")


class _Invalid(ValueError):
    """A text field failed validation."""


def _decimal(text: str, low: float, high: float, what: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise _Invalid(f"{what} is not a decimal number")
    value = float(text)
    if not (math.isfinite(value) and low <= value <= high):
        raise _Invalid(f"{what} {value} outside {low}..{high}")
    return value


def _integer(text: str, low: int, high: int, what: str) -> int:
    if not _INT.fullmatch(text):
        raise _Invalid(f"{what} is not an unsigned integer")
    value = int(text)
    if not low <= value <= high:
        raise _Invalid(f"{what} {value} outside {low}..{high}")
    return value


def _timestamp(text: str) -> datetime:
    return datetime.fromtimestamp(_integer(text, MIN_UNIX, MAX_UNIX, "timestamp"), UTC)


def _parse_position(imei: str, parts: list[str]) -> TextPosition:
    if len(parts) != 7:
        raise _Invalid("~A needs IMEI and 7 values")
    unix, lat, lon, speed, course, sats, hdop = parts
    return TextPosition(
        imei=imei,
        time=_timestamp(unix),
        latitude=_decimal(lat, -90, 90, "latitude"),
        longitude=_decimal(lon, -180, 180, "longitude"),
        speed_kmh=_decimal(speed, 0, 1000, "speed"),
        course=_decimal(course, 0, 360, "course"),
        satellites=_integer(sats, 0, 99, "satellites"),
        hdop=_decimal(hdop, 0, 99.9, "hdop"),
    )


def _parse_can(parts: list[str], extended: bool) -> CanFrame:
    if not 2 <= len(parts) <= 9:
        raise _Invalid("CAN frame needs an id and 1..8 data bytes")
    if not _HEX_ID.fullmatch(parts[0]):
        raise _Invalid("CAN id is not hexadecimal")
    can_id = int(parts[0], 16)
    if can_id > _MAX_EXTENDED_ID:
        raise _Invalid(f"CAN id 0x{can_id:X} exceeds 29 bits")
    # The seed's own test clients send J1939 (29-bit) ids in `~T` frames too: an id that does not fit
    # 11 bits is taken as extended rather than rejected, since it is unambiguous.
    extended = extended or can_id > _MAX_STANDARD_ID
    if not all(_HEX_BYTE.fullmatch(part) for part in parts[1:]):
        raise _Invalid("CAN data bytes must be two hex digits each")
    return CanFrame(can_id=can_id, data=bytes.fromhex("".join(parts[1:])), extended=extended, time=None)


def _parse_event(imei: str, parts: list[str]) -> TextEvent:
    if len(parts) < 3:
        raise _Invalid("~E needs IMEI, type, time and description")
    return TextEvent(
        imei=imei,
        event_type=_integer(parts[0], 0, 0xFFFF, "event type"),
        time=_timestamp(parts[1]),
        description=",".join(parts[2:]),
    )


_KINDS = {
    "A": TelemetryKind.TEXT_POSITION,
    "T": TelemetryKind.TEXT_CAN,
    "X": TelemetryKind.TEXT_CAN_EXTENDED,
    "E": TelemetryKind.TEXT_EVENT,
}


class TextSession:
    """Decode one connection speaking the text dialect; same outputs as :class:`NavtelecomSession`."""

    def __init__(self, *, max_frame_bytes: int = MAX_TEXT_FRAME) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.imei: str | None = None
        self.fatal: Fatal | None = None
        self._buf = bytearray()

    @property
    def state(self) -> SessionState:
        """Return the protocol state (text connections identify themselves with their first frame)."""
        if self.fatal is not None:
            return SessionState.CLOSED
        return SessionState.IDENTIFIED if self.imei else SessionState.AWAIT_HANDSHAKE

    @property
    def buffered(self) -> int:
        """Return the number of received bytes not yet framed."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Output]:
        """Consume received bytes; return the outputs of every frame completed by them."""
        if self.fatal is not None:
            return []
        buf = self._buf
        buf += data
        outputs: list[Output] = []
        pos = 0
        while True:
            while pos < len(buf) and buf[pos] in _WHITESPACE:
                pos += 1
            if pos >= len(buf):
                break
            if buf[pos] != _TILDE:
                self.fatal = Fatal(
                    FatalCode.BAD_START,
                    f"byte 0x{buf[pos]:02X} cannot start a text frame",
                    bytes(buf[pos : pos + 32]),
                )
                outputs.append(self.fatal)
                break
            end = buf.find(b"~", pos + 1, pos + self.max_frame_bytes)
            if end < 0:
                if len(buf) - pos >= self.max_frame_bytes:
                    self.fatal = Fatal(
                        FatalCode.TOO_LARGE,
                        f"no closing '~' within {self.max_frame_bytes} bytes",
                        bytes(buf[pos : pos + 32]),
                    )
                    outputs.append(self.fatal)
                break
            raw = bytes(buf[pos : end + 1])
            pos = end + 1
            outputs.append(self._decode(raw))
        del buf[:pos]
        if self.fatal is not None:
            buf.clear()
        return outputs

    def _decode(self, raw: bytes) -> Output:
        body = raw[1:-1]
        if not body or body[0] not in _LETTERS:
            return Rejected(RejectCode.UNKNOWN_MESSAGE, "unknown text frame type", raw)
        if not all(0x20 <= byte < 0x7F for byte in body):
            return Rejected(RejectCode.BAD_FORMAT, "non-printable byte in a text frame", raw)
        letter = chr(body[0])
        parts = body[1:].decode("ascii").split(",")
        imei = parts[0]
        if not _IMEI.fullmatch(imei):
            return Rejected(RejectCode.BAD_FORMAT, "IMEI must be 15 digits", raw)
        if self.imei is not None and imei != self.imei:
            return Rejected(RejectCode.IMEI_MISMATCH, f"IMEI {imei} on a connection of {self.imei}", raw)
        try:
            if letter == "A":
                record: object = _parse_position(imei, parts[1:])
            elif letter == "E":
                record = _parse_event(imei, parts[1:])
            else:
                record = _parse_can(parts[1:], extended=letter == "X")
        except _Invalid as err:
            return Rejected(RejectCode.BAD_FORMAT, f"~{letter}: {err}", raw)
        self.imei = imei
        return Telemetry(_KINDS[letter], [record], text_ack(letter, imei), raw)


class DeviceSession:
    """One connection of either dialect: detects it from the first bytes, then delegates.

    ``allow_text=False`` treats every connection as NTCB (text input then fails as NTCB would: fatal).
    """

    def __init__(
        self, *, allow_text: bool = True, field100_size: int = 2, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> None:
        self.allow_text = allow_text
        self._field100_size = field100_size
        self._max_frame_bytes = max_frame_bytes
        self._pending = b""
        self.session: NavtelecomSession | TextSession | None = None

    @property
    def dialect(self) -> Dialect | None:
        """Return the detected dialect (None until the first bytes arrived)."""
        if self.session is None:
            return None
        return Dialect.TEXT if isinstance(self.session, TextSession) else Dialect.NTCB

    @property
    def imei(self) -> str | None:
        """Return the device identifier once known."""
        return self.session.imei if self.session else None

    @property
    def fatal(self) -> Fatal | None:
        """Return the fatal error that ended the stream, if any."""
        return self.session.fatal if self.session else None

    @property
    def buffered(self) -> int:
        """Return the number of received bytes not yet framed."""
        return self.session.buffered if self.session else len(self._pending)

    def feed(self, data: bytes) -> list[Output]:
        """Consume received bytes; return outputs (see ``NavtelecomSession.feed``)."""
        if self.session is None:
            self._pending += data
            dialect = detect_dialect(self._pending[:3])
            if dialect is None:
                return []
            if dialect is Dialect.TEXT and self.allow_text:
                self.session = TextSession()
            else:
                self.session = NavtelecomSession(
                    field100_size=self._field100_size, max_frame_bytes=self._max_frame_bytes
                )
            data, self._pending = self._pending, b""
        return self.session.feed(data)
