"""Incremental framing of one Navtelecom TCP stream: NTCB packets, FLEX messages and pings.

The framer only delimits and checks checksums; it never interprets bodies. It knows the FLEX record size
only through the caller (the session passes the negotiated size), because FLEX messages carry no length.
It never resynchronises by scanning for ``~`` or ``@``: both bytes occur inside binary records, so a
stream that cannot be framed is reported as fatal and the connection is closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .checksum import crc8, xor8
from .outputs import FatalCode

__all__ = [
    "MAX_FRAME_BYTES",
    "NTCB_HEADER_SIZE",
    "NTCB_PREAMBLE",
    "Frame",
    "FrameKind",
    "Framer",
    "FramingError",
    "check_frame",
    "measure_frame",
]

NTCB_PREAMBLE = b"@NTC"
NTCB_HEADER_SIZE = 16
# The largest NTCB packet the header can describe: 16 + 65535 (DOC p. 13). FLEX archives are limited by the
# DOC to 1.3 KB, so no genuine frame of any kind exceeds this; anything larger is refused before buffering.
MAX_FRAME_BYTES = NTCB_HEADER_SIZE + 0xFFFF

_START_NTCB = 0x40  # "@"
_START_FLEX = 0x7E  # "~"
_PING = 0x7F
_EXCERPT = 32


class FrameKind(StrEnum):
    """What the first bytes of a frame announce."""

    NTCB = "ntcb"
    PING = "ping"
    FLEX_ARCHIVE = "A"
    FLEX_EVENT = "T"
    FLEX_CURRENT = "C"
    FLEX_EXTRA_ARCHIVE = "E"
    FLEX_EXTRA_EVENT = "X"


_FLEX_KINDS = {ord(kind.value): kind for kind in FrameKind if len(kind.value) == 1}


@dataclass(frozen=True, slots=True)
class Frame:
    """One delimited frame. ``checksum_ok`` False: consumed, but must be rejected without an answer."""

    kind: FrameKind
    raw: bytes = field(repr=False)
    checksum_ok: bool = True


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be delimited from this point on."""

    code: FatalCode
    reason: str
    excerpt: bytes


def measure_frame(
    buf: bytes | bytearray, pos: int, record_size: int | None, max_frame_bytes: int = MAX_FRAME_BYTES
) -> int | FramingError | None:
    """Return the length of the frame starting at ``buf[pos]``, None if more bytes are needed to know it.

    ``record_size`` is the negotiated FLEX record size (None before negotiation).
    """
    end = len(buf)
    available = end - pos
    if available <= 0:
        return None
    first = buf[pos]
    if first == _START_NTCB:
        if available < NTCB_HEADER_SIZE:
            head = bytes(buf[pos : pos + 4])
            if not NTCB_PREAMBLE.startswith(head):
                return _error(FatalCode.BAD_HEADER, "NTCB preamble is not @NTC", buf, pos)
            return None
        header = bytes(buf[pos : pos + NTCB_HEADER_SIZE])
        if header[:4] != NTCB_PREAMBLE:
            return _error(FatalCode.BAD_HEADER, "NTCB preamble is not @NTC", buf, pos)
        if xor8(header[:15]) != header[15]:
            # A damaged header means a damaged length: there is no trustworthy end of this frame.
            return _error(FatalCode.BAD_HEADER, "NTCB header checksum (CSp) mismatch", buf, pos)
        total = NTCB_HEADER_SIZE + (header[12] | header[13] << 8)
        return _capped(total, max_frame_bytes, buf, pos)
    if first == _START_FLEX:
        if record_size is None:
            return _error(FatalCode.NOT_NEGOTIATED, "FLEX message before *>FLEX negotiation", buf, pos)
        if available < 2:
            return None
        kind = _FLEX_KINDS.get(buf[pos + 1])
        if kind is None:
            return _error(
                FatalCode.UNKNOWN_FLEX_TYPE, f"unknown FLEX message type 0x{buf[pos + 1]:02X}", buf, pos
            )
        if kind is FrameKind.FLEX_ARCHIVE:
            if available < 3:
                return None
            return _capped(3 + buf[pos + 2] * record_size + 1, max_frame_bytes, buf, pos)
        if kind is FrameKind.FLEX_EVENT:
            return _capped(6 + record_size + 1, max_frame_bytes, buf, pos)
        if kind is FrameKind.FLEX_CURRENT:
            return _capped(2 + record_size + 1, max_frame_bytes, buf, pos)
        if kind is FrameKind.FLEX_EXTRA_EVENT:
            if available < 8:
                return None
            return _capped(8 + (buf[pos + 6] | buf[pos + 7] << 8) + 1, max_frame_bytes, buf, pos)
        # ~E: count U8, then count records each prefixed by its U16 LE length.
        if available < 3:
            return None
        cursor = pos + 3
        for _ in range(buf[pos + 2]):
            if cursor + 2 > end:
                return None
            cursor += 2 + (buf[cursor] | buf[cursor + 1] << 8)
            if cursor + 1 - pos > max_frame_bytes:
                return _capped(cursor + 1 - pos, max_frame_bytes, buf, pos)
        return _capped(cursor + 1 - pos, max_frame_bytes, buf, pos)
    if first == _PING:
        return 1
    return _error(FatalCode.BAD_START, f"byte 0x{first:02X} cannot start a message", buf, pos)


def _capped(total: int, cap: int, buf: bytes | bytearray, pos: int) -> int | FramingError:
    if total > cap:
        return _error(FatalCode.TOO_LARGE, f"frame of {total} bytes exceeds the {cap}-byte cap", buf, pos)
    return total


def _error(code: FatalCode, reason: str, buf: bytes | bytearray, pos: int) -> FramingError:
    return FramingError(code, reason, bytes(buf[pos : pos + _EXCERPT]))


def check_frame(kind: FrameKind, raw: bytes) -> bool:
    """Return whether a delimited frame's checksum holds (CSd for NTCB, CRC-8 for FLEX)."""
    if kind is FrameKind.NTCB:
        return xor8(memoryview(raw)[NTCB_HEADER_SIZE:]) == raw[14]
    if kind is FrameKind.PING:
        return True
    # CRC-8 without final XOR: the CRC over the frame including its CRC byte is 0.
    return crc8(raw) == 0


class Framer:
    """Accumulate stream bytes and cut them into frames.

    ``next_frame`` returns a :class:`Frame`, a :class:`FramingError` (fatal) or None (need more bytes).
    The buffer never holds more than one incomplete frame, which is at most ``max_frame_bytes`` long, plus
    whatever the last ``feed`` added on top of complete frames still to be taken.
    """

    __slots__ = ("_buf", "_pos", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_frame_bytes = max_frame_bytes

    @property
    def buffered(self) -> int:
        """Return the number of bytes received but not yet framed."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def pending(self) -> bytes:
        """Return the unframed bytes (for diagnostics)."""
        return bytes(self._buf[self._pos :])

    def next_frame(self, record_size: int | None) -> Frame | FramingError | None:
        """Return the next complete frame, a fatal framing error, or None when more bytes are needed."""
        buf = self._buf
        pos = self._pos
        length = measure_frame(buf, pos, record_size, self.max_frame_bytes)
        if length is None or isinstance(length, FramingError):
            return length
        if pos + length > len(buf):
            return None
        raw = bytes(buf[pos : pos + length])
        self._pos = pos + length
        first = raw[0]
        if first == _START_NTCB:
            kind = FrameKind.NTCB
        elif first == _PING:
            return Frame(FrameKind.PING, raw)
        else:
            kind = _FLEX_KINDS[raw[1]]
        return Frame(kind, raw, check_frame(kind, raw))
