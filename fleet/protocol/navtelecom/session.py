"""Per-connection state machine: handshake → FLEX negotiation → telemetry, as pure bytes-in/outputs-out.

The session never sends anything. ``feed`` returns one output per consumed frame (see ``outputs``), and a
final :class:`Fatal` when the stream cannot be framed. Telemetry carries its acknowledgement, which the
listener sends only after storing the records.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from .flex import DecodeError, decode_flex
from .framing import MAX_FRAME_BYTES, NTCB_HEADER_SIZE, Frame, FrameKind, Framer, FramingError
from .layout import FlexLayout, LayoutError, fields_from_mask, layout_for_mask
from .legacy import LEGACY_FORMATS, decode_legacy_archive, decode_legacy_single
from .ntcb import DEVICE_ID, SERVER_ID, command, parse_header, parse_version_answer, reply_packet
from .outputs import (
    CommandAnswer,
    Fatal,
    KeepAlive,
    Output,
    RejectCode,
    Rejected,
    Reply,
    ReplyKind,
    Telemetry,
    TelemetryKind,
)
from .records import FlexRecord

__all__ = [
    "FLEX_PROTOCOL",
    "SUPPORTED_VERSIONS",
    "NavtelecomSession",
    "Negotiation",
    "SessionState",
    "answer_version",
    "decode_frame",
]

FLEX_PROTOCOL = 0xB0
# FLEX versions this codec decodes: 1.0, 2.0, 3.0 (protocol and structure use the same codes).
SUPPORTED_VERSIONS = (10, 20, 30)
# A device identifier is 15 IMEI digits in practice (DOC: char[]); allow other short alphanumeric ids.
_MAX_ID_LENGTH = 32
_FLEX_TELEMETRY = {
    FrameKind.FLEX_ARCHIVE: TelemetryKind.ARCHIVE,
    FrameKind.FLEX_EVENT: TelemetryKind.EVENT,
    FrameKind.FLEX_CURRENT: TelemetryKind.CURRENT,
    FrameKind.FLEX_EXTRA_ARCHIVE: TelemetryKind.EXTRA_ARCHIVE,
    FrameKind.FLEX_EXTRA_EVENT: TelemetryKind.EXTRA_EVENT,
}
# Command answers whose payload is a binary FLEX record right after the 3-byte prefix (DOC App. Г).
_RECORD_ANSWERS = (b"*@C", b"*#A", b"*#I")
# Reported by one public client for *#A: type 0x0B, FLEX version, 32-byte mask, then the record.
_MAIN_RECORD_TYPE = 0x0B


class SessionState(StrEnum):
    """Where a connection is in the protocol."""

    AWAIT_HANDSHAKE = "await_handshake"
    IDENTIFIED = "identified"
    NEGOTIATED = "negotiated"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Negotiation:
    """An accepted ``*>FLEX`` negotiation: what the listener persists to redecode frames later."""

    protocol_version: int
    struct_version: int
    bit_count: int
    mask: bytes
    field100_size: int = 2

    @property
    def layout(self) -> FlexLayout:
        """Return the record layout of this negotiation."""
        return layout_for_mask(self.mask, self.bit_count, self.field100_size)


def answer_version(requested: int) -> int | None:
    """Return the version to answer for a requested one: itself if supported, else the next lower one.

    None when no supported version is lower (the request is refused without an answer).
    """
    if requested in SUPPORTED_VERSIONS:
        return requested
    lower = [version for version in SUPPORTED_VERSIONS if version < requested]
    return lower[-1] if lower else None


class NavtelecomSession:
    """Decode one device connection speaking NTCB + FLEX.

    ``field100_size`` is 2 (DOC v6.x) or 1 (older firmware). ``max_frame_bytes`` caps a single frame (and
    so the buffered bytes): larger frames are fatal instead of being buffered.
    """

    def __init__(self, *, field100_size: int = 2, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if field100_size not in (1, 2):
            raise ValueError("field100_size must be 1 or 2")
        self.field100_size = field100_size
        self._framer = Framer(max_frame_bytes)
        self.imei: str | None = None
        self.device_id = DEVICE_ID  # the device's NTCB id (its IDs field), used to address commands
        self.server_id = SERVER_ID
        self.negotiation: Negotiation | None = None
        self._identified = False
        self._layout: FlexLayout | None = None
        self._record_size: int | None = None
        self.fatal: Fatal | None = None

    @classmethod
    def restore(
        cls,
        negotiation: Negotiation | None = None,
        *,
        imei: str | None = None,
        device_id: int = DEVICE_ID,
        server_id: int = SERVER_ID,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> NavtelecomSession:
        """Return a session already past the handshake (and negotiation, if given), e.g. for redecoding."""
        session = cls(
            field100_size=negotiation.field100_size if negotiation else 2, max_frame_bytes=max_frame_bytes
        )
        session._identified = True
        session.imei = imei
        session.device_id = device_id
        session.server_id = server_id
        if negotiation is not None:
            session._adopt(negotiation)
        return session

    # -- state exposed to the listener -------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """Return the protocol state."""
        if self.fatal is not None:
            return SessionState.CLOSED
        if self._layout is not None:
            return SessionState.NEGOTIATED
        return SessionState.IDENTIFIED if self._identified else SessionState.AWAIT_HANDSHAKE

    @property
    def layout(self) -> FlexLayout | None:
        """Return the negotiated record layout."""
        return self._layout

    @property
    def mask(self) -> bytes | None:
        """Return the negotiated field mask as sent by the device."""
        return self.negotiation.mask if self.negotiation else None

    @property
    def buffered(self) -> int:
        """Return the number of received bytes not yet framed."""
        return self._framer.buffered

    def command(self, text: str | bytes) -> bytes:
        """Encode a server command for this device (NTCB ids taken from its handshake)."""
        return command(text, self.device_id, self.server_id)

    # -- decoding ------------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Output]:
        """Consume received bytes; return the outputs of every frame completed by them."""
        if self.fatal is not None:
            return []
        framer = self._framer
        framer.feed(data)
        outputs: list[Output] = []
        while True:
            frame = framer.next_frame(self._record_size)
            if frame is None:
                return outputs
            if isinstance(frame, FramingError):
                self.fatal = Fatal(frame.code, frame.reason, frame.excerpt)
                outputs.append(self.fatal)
                return outputs
            outputs.append(self._handle(frame))

    def _handle(self, frame: Frame) -> Output:
        raw = frame.raw
        if frame.kind is FrameKind.PING:
            return KeepAlive(raw)
        if not frame.checksum_ok:
            what = "NTCB body checksum (CSd)" if frame.kind is FrameKind.NTCB else "FLEX CRC-8"
            return Rejected(RejectCode.BAD_CHECKSUM, f"{what} mismatch", raw)
        try:
            if frame.kind is FrameKind.NTCB:
                return self._handle_ntcb(raw)
            assert self._layout is not None  # the framer refuses FLEX frames before negotiation
            message = decode_flex(raw, self._layout)
        except (DecodeError, struct.error) as err:
            return Rejected(RejectCode.BAD_FORMAT, str(err), raw)
        return Telemetry(_FLEX_TELEMETRY[frame.kind], message.records, message.ack, raw, message.event_index)

    def _handle_ntcb(self, raw: bytes) -> Output:
        body = raw[NTCB_HEADER_SIZE:]
        if not body:
            return KeepAlive(raw)
        if body.startswith(b"*>S"):
            return self._handshake(raw, body)
        if body.startswith(b"*>FLEX"):
            return self._negotiate(raw, body)
        if body.startswith((b"*@", b"*#")):
            return self._command_answer(raw, body)
        # *>T is followed by a record whose first byte is a format id (0 = U16 id follows); this keeps
        # other *>T... messages such as *>TMKEY out of the legacy decoder.
        if body.startswith(b"*>T") and len(body) > 3 and (body[3] in LEGACY_FORMATS or body[3] == 0):
            return self._legacy(raw, body)
        if body.startswith(b"*>A") and len(body) > 3:
            return self._legacy(raw, body)
        if body.startswith(b"*>CODE"):
            return Rejected(RejectCode.UNSUPPORTED, "encryption (*>CODE) is not supported", raw)
        return Rejected(RejectCode.UNKNOWN_MESSAGE, f"unknown NTCB message {bytes(body[:8])!r}", raw)

    def _handshake(self, raw: bytes, body: bytes) -> Output:
        identifier = bytes(body[4:]).rstrip(b"\x00 \r\n")
        if (
            body[3:4] != b":"
            or not 0 < len(identifier) <= _MAX_ID_LENGTH
            or not identifier.isascii()
            or not identifier.isalnum()
        ):
            return Rejected(RejectCode.BAD_FORMAT, "handshake without a valid identifier", raw)
        imei = identifier.decode("ascii")
        if self.imei is not None and imei != self.imei:
            # Another identity on the same connection: whatever it negotiated before does not apply.
            self.negotiation = None
            self._layout = None
            self._record_size = None
        header = parse_header(raw)
        self.imei = imei
        self._identified = True
        self.device_id = header.sender_id
        self.server_id = header.receiver_id
        return Reply(reply_packet(raw, b"*<S"), raw, ReplyKind.HANDSHAKE)

    def _negotiate(self, raw: bytes, body: bytes) -> Output:
        # Accepted even before a handshake (the DOC's own example starts with *>FLEX): identity policy is
        # the listener's business, and it can see ``imei`` is still None.
        if len(body) < 10:
            return Rejected(RejectCode.BAD_FORMAT, "*>FLEX body too short", raw)
        protocol, protocol_version, struct_version, bit_count = body[6], body[7], body[8], body[9]
        mask = bytes(body[10 : 10 + (bit_count + 7) // 8])
        if protocol != FLEX_PROTOCOL:
            return Rejected(RejectCode.UNSUPPORTED, f"protocol 0x{protocol:02X} is not FLEX (0xB0)", raw)
        if bit_count == 0 or len(mask) != (bit_count + 7) // 8:
            return Rejected(RejectCode.BAD_FORMAT, "*>FLEX mask shorter than its declared size", raw)
        answer_protocol = answer_version(protocol_version)
        answer_struct = answer_version(struct_version)
        if answer_protocol is None or answer_struct is None:
            return Rejected(RejectCode.UNSUPPORTED, "FLEX version below 1.0 requested", raw)
        adopted = (answer_protocol, answer_struct) == (protocol_version, struct_version)
        if adopted:
            try:
                fields = fields_from_mask(mask, bit_count)
            except LayoutError as err:
                return Rejected(RejectCode.BAD_FORMAT, str(err), raw)
            if not fields:
                return Rejected(RejectCode.BAD_FORMAT, "*>FLEX mask selects no field", raw)
            self._adopt(Negotiation(protocol_version, struct_version, bit_count, mask, self.field100_size))
        # Otherwise the answer offers lower versions: the device renegotiates with a matching mask (DOC p. 19)
        # and data does not flow until then, so the current layout is left as it is.
        reply = b"*<FLEX" + bytes((FLEX_PROTOCOL, answer_protocol, answer_struct))
        return Reply(reply_packet(raw, reply), raw, ReplyKind.NEGOTIATION, state_changed=adopted)

    def _adopt(self, negotiation: Negotiation) -> None:
        self.negotiation = negotiation
        self.field100_size = negotiation.field100_size
        self._layout = negotiation.layout
        self._record_size = self._layout.size

    def _legacy(self, raw: bytes, body: bytes) -> Output:
        if body[2:3] == b"T":
            record = decode_legacy_single(body)
            ack = reply_packet(raw, b"*<T" + record.index.to_bytes(4, "little"))
            return Telemetry(TelemetryKind.LEGACY_SINGLE, [record], ack, raw, record.index)
        records = decode_legacy_archive(body)
        ack = reply_packet(raw, b"*<A" + bytes((len(records),)))
        return Telemetry(TelemetryKind.LEGACY_ARCHIVE, records, ack, raw)

    def _command_answer(self, raw: bytes, body: bytes) -> Output:
        record = self._answer_record(body) if body.startswith(_RECORD_ANSWERS) else None
        if record is not None:
            return CommandAnswer(bytes(body[:3]).decode("ascii"), record, raw)
        text = _printable(bytes(body).rstrip(b"\x00"))
        version = parse_version_answer(text)
        firmware = f"{version.model} {version.firmware}".strip() if version is not None else None
        return CommandAnswer(text, None, raw, version, firmware)

    def _answer_record(self, body: bytes) -> FlexRecord | None:
        payload = body[3:]
        if all(0x20 <= byte < 0x7F for byte in payload):
            return None  # a text answer such as "*@CNCT_DRC OK"
        layout = self._layout
        if layout is not None and len(payload) == layout.size:
            return layout.decode_one(payload)
        if len(payload) >= 34 and payload[0] == _MAIN_RECORD_TYPE:
            try:
                own = layout_for_mask(bytes(payload[2:34]), None, self.field100_size)
            except LayoutError:
                return None
            if own.fields and len(payload) == 34 + own.size:
                return own.decode_one(payload, 34)
        return None


def _printable(data: bytes) -> str:
    """Return ASCII text with every byte outside 0x20..0x7E escaped as \\xNN (safe to store and log)."""
    if all(0x20 <= byte < 0x7F for byte in data):
        return data.decode("ascii")
    return "".join(chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}" for byte in data)


def decode_frame(
    raw: bytes,
    negotiation: Negotiation | bytes | None = None,
    *,
    bit_count: int | None = None,
    field100_size: int = 2,
    imei: str | None = None,
) -> Output:
    """Decode one stored frame as the session would have, given the negotiation in force at the time.

    ``negotiation`` is the stored :class:`Negotiation`, or just its mask bytes (then ``bit_count``
    defaults to every bit of the mask, at most 255, and ``field100_size`` to 2). Used to redecode
    ``raw_frames``; returns ``Rejected(TRUNCATED)`` for an incomplete frame and ``Rejected(BAD_FORMAT)``
    when ``raw`` holds more than one frame.
    """
    if isinstance(negotiation, bytes | bytearray):
        mask = bytes(negotiation)
        bits = min(len(mask) * 8, 255) if bit_count is None else bit_count
        negotiation = Negotiation(30, 30, bits, mask, field100_size)
    session = NavtelecomSession.restore(negotiation, imei=imei)
    outputs = session.feed(raw)
    if not outputs:
        return Rejected(RejectCode.TRUNCATED, "incomplete frame", bytes(raw))
    if len(outputs) > 1 or session.buffered:
        if isinstance(outputs[-1], Fatal):
            return outputs[-1]
        return Rejected(RejectCode.BAD_FORMAT, "more than one frame", bytes(raw))
    return outputs[0]
