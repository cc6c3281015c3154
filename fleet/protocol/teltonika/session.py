"""One Teltonika TCP connection: framing (spec §1.4), IMEI login, AVL packets, GPRS messages.

Pure: bytes in, neutral outputs (:mod:`fleet.protocol.base`) out, nothing sent by itself.

* IMEI packet → :class:`Identify` (accept ``01``, refuse ``00``); a length other than 15 or non-digits →
  :class:`Fatal` with farewell ``00`` (spec §1.2). Data before the IMEI, a second IMEI packet or a bad
  preamble → Fatal (re-synchronising is impossible). A data-field length over the cap or below 3 → Fatal,
  decided from the 8-byte header, before buffering.
* AVL packet (Codec 8/8E/16) → :class:`Telemetry` with the ACK ``U32 record count``, sent after commit.
  Bad CRC, N1 ≠ N2, records not filling the packet, IO counts not adding up → :class:`Rejected` (no ACK,
  the device resends); three CRC failures in a row → Fatal.
* Codec 12/14 response → :class:`CommandAnswer` (no ACK); Codec 13/15 → :class:`Ignored`; another codec
  with a valid CRC → Rejected ``unsupported``. ``FF`` → :class:`KeepAlive`.
"""

from __future__ import annotations

import struct
from typing import Any

from fleet.protocol.base import (
    Command,
    CommandAnswer,
    CustomCommand,
    Fatal,
    Identify,
    Ignored,
    KeepAlive,
    Output,
    OutputCommand,
    Reboot,
    Rejected,
    RequestPosition,
    Telemetry,
    UnsupportedCommand,
)

from .avl import TELEMETRY_CODECS, DecodeError, decode_records
from .messages import (
    CODEC_12,
    CODEC_13,
    CODEC_14,
    CODEC_15,
    TYPE_NOT_EXECUTED,
    TYPE_RESPONSE,
    MessageError,
    crc16_arc,
    decode_message,
    encode_message,
    printable,
)

__all__ = [
    "ACCEPT",
    "ARCHIVE_PROTOCOL",
    "MAX_DATA_BYTES",
    "REFUSE",
    "TeltonikaSession",
    "command_bytes",
    "frame_type_of",
]

ARCHIVE_PROTOCOL = "teltonika"
ACCEPT = b"\x01"
REFUSE = b"\x00"
IMEI_LENGTH = 15
# Data-field cap (spec §1.4): real AVL packets are at most 1,280 bytes, a Codec 12 camera chunk about
# 2 KB; 64 KiB leaves room for anything genuine and bounds what one connection makes us buffer.
MAX_DATA_BYTES = 65536
MIN_DATA_BYTES = 3
MAX_BAD_CRC = 3  # spec §2.1 Decision: close after three consecutive CRC failures
EXCERPT = 32
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_ACKS = [n.to_bytes(4, "big") for n in range(256)]


def frame_type_of(raw: bytes) -> str:
    """Return a short label of a raw frame (``imei``, ``codec8e``, ``codec12``, ``ping``...)."""
    if raw[:1] == b"\xff" and len(raw) == 1:
        return "ping"
    if len(raw) >= 2 and raw[:2] == b"\x00\x0f":
        return "imei"
    if len(raw) > 8 and raw[:4] == b"\x00\x00\x00\x00":
        codec = raw[8]
        if codec in TELEMETRY_CODECS:
            return TELEMETRY_CODECS[codec]
        return f"codec{codec}" if codec in (CODEC_12, CODEC_13, CODEC_14, CODEC_15) else f"codec_{codec:02x}"
    return "unknown"


def command_bytes(cmd: Command) -> bytes:
    """Encode a neutral command as a Codec 12 frame (the SMS command text without login and password)."""
    if isinstance(cmd, CustomCommand):
        text = cmd.text
    elif isinstance(cmd, OutputCommand):
        if not 1 <= cmd.index <= 4:
            raise UnsupportedCommand("Teltonika trackers have digital outputs 1..4")
        # setdigout takes one character per output; '?' leaves an output as it is.
        text = "setdigout " + "?" * (cmd.index - 1) + ("1" if cmd.on else "0")
    elif isinstance(cmd, RequestPosition):
        text = "getgps"
    elif isinstance(cmd, Reboot):
        text = "cpureset"
    else:
        raise UnsupportedCommand(f"Teltonika has no '{getattr(cmd, 'type', cmd)}' command")
    try:
        payload = text.encode("ascii")
    except UnicodeEncodeError as err:
        raise UnsupportedCommand("Teltonika command text must be ASCII") from err
    if not payload or len(payload) > 1024:
        raise UnsupportedCommand("Teltonika command text must be 1..1024 characters")
    return encode_message(payload)


class TeltonikaSession:
    """The CodecSession of one Teltonika connection."""

    __slots__ = ("_bad_crc", "_buf", "_pos", "fatal", "imei")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.imei: str | None = None
        self.fatal: Fatal | None = None
        self._bad_crc = 0

    @classmethod
    def from_settings(cls, settings: Any) -> TeltonikaSession:
        """Return a session (no Teltonika-specific settings yet)."""
        return cls()

    # --- contract ---------------------------------------------------------------------------------------------
    @property
    def identity(self) -> str | None:
        return self.imei

    @property
    def ready(self) -> bool:
        return self.imei is not None

    @property
    def state(self) -> dict[str, Any] | None:
        return None

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def archive_protocol(self) -> str:
        return ARCHIVE_PROTOCOL

    def frame_type(self, raw: bytes) -> str:
        return frame_type_of(raw)

    def encode_command(self, cmd: Command) -> bytes:
        return command_bytes(cmd)

    # --- framing ---------------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Output]:
        """Consume received bytes; return the outputs of every frame completed by them."""
        if self.fatal is not None:
            return []
        buf = self._buf
        if self._pos and self._pos >= len(buf) // 2:
            del buf[: self._pos]
            self._pos = 0
        buf += data
        outputs: list[Output] = []
        pos = self._pos
        end = len(buf)
        while pos < end:
            if buf[pos] == 0xFF:
                outputs.append(KeepAlive(b"\xff"))
                pos += 1
                continue
            if end - pos < 2:
                break
            length = _U16.unpack_from(buf, pos)[0]
            if self.imei is None:
                if length == 0:
                    self._fail(outputs, "no_login", "data before the IMEI packet", buf, pos)
                    break
                if length != IMEI_LENGTH:
                    self._fail(outputs, "bad_imei", f"IMEI length {length}, not 15", buf, pos, REFUSE)
                    break
                if end - pos < 2 + IMEI_LENGTH:
                    break
                raw = bytes(buf[pos : pos + 2 + IMEI_LENGTH])
                digits = raw[2:]
                if not digits.isdigit():
                    self._fail(outputs, "bad_imei", "IMEI is not 15 ASCII digits", buf, pos, REFUSE)
                    break
                self.imei = digits.decode("ascii")
                outputs.append(Identify(self.imei, ACCEPT, REFUSE, raw))
                pos += 2 + IMEI_LENGTH
                continue
            if length != 0:
                self._fail(outputs, "bad_preamble", "a frame after login must start with 00000000", buf, pos)
                break
            if end - pos < 8:
                break
            if buf[pos + 2] or buf[pos + 3]:
                self._fail(outputs, "bad_preamble", "a frame must start with 00000000", buf, pos)
                break
            size = _U32.unpack_from(buf, pos + 4)[0]
            if size > MAX_DATA_BYTES:
                self._fail(
                    outputs, "too_large", f"data field of {size} bytes over {MAX_DATA_BYTES}", buf, pos
                )
                break
            if size < MIN_DATA_BYTES:
                self._fail(outputs, "bad_length", f"data field of {size} bytes", buf, pos)
                break
            total = 12 + size
            if end - pos < total:
                break
            frame = bytes(buf[pos : pos + total])
            pos += total
            outputs.append(self._frame(frame, size))
            if self._bad_crc >= MAX_BAD_CRC:
                self._fail(outputs, "too_many_bad_crc", f"{MAX_BAD_CRC} CRC failures in a row", frame, 0)
                break
        self._pos = pos
        if self.fatal is not None:
            buf.clear()
            self._pos = 0
        return outputs

    def _fail(
        self,
        outputs: list[Output],
        code: str,
        reason: str,
        buf: bytes | bytearray,
        pos: int,
        farewell: bytes = b"",
    ) -> None:
        self.fatal = Fatal(code, reason, bytes(buf[pos : pos + EXCERPT]), farewell)
        outputs.append(self.fatal)

    # --- decoding ---------------------------------------------------------------------------------------------
    def _frame(self, frame: bytes, size: int) -> Output:
        crc_field = _U32.unpack_from(frame, 8 + size)[0]
        body = memoryview(frame)[8 : 8 + size]
        if crc_field > 0xFFFF or crc_field != crc16_arc(body):
            self._bad_crc += 1
            return Rejected("bad_checksum", "CRC-16 mismatch", frame)
        self._bad_crc = 0
        codec = frame[8]
        kind = TELEMETRY_CODECS.get(codec)
        if kind is not None:
            count = frame[9]
            if count != frame[7 + size] or count == 0:
                return Rejected("bad_format", f"record counts differ ({count} / {frame[7 + size]})", frame)
            try:
                records = decode_records(frame, codec, count, 10, 7 + size)
            except DecodeError as err:
                return Rejected("bad_format", str(err), frame)
            return Telemetry(kind, records, _ACKS[count], frame)
        if codec in (CODEC_12, CODEC_14):
            try:
                message = decode_message(frame)
            except MessageError as err:
                return Rejected("bad_format", str(err), frame)
            if message.type == TYPE_RESPONSE:
                return CommandAnswer(printable(message.payload), None, frame)
            if message.type == TYPE_NOT_EXECUTED:
                return CommandAnswer("not executed (IMEI mismatch)", None, frame, failed=True)
            return Ignored(f"codec{codec}", f"message type 0x{message.type:02x} from a device", frame)
        if codec in (CODEC_13, CODEC_15):
            return Ignored(f"codec{codec}", f"Codec {codec} messages are not used", frame)
        return Rejected("unsupported", f"codec 0x{codec:02x} is not supported", frame)
