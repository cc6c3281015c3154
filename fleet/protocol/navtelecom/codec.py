"""Navtelecom behind the neutral contract: the CodecSession the listener uses, commands, redecoding.

:class:`NavtelecomCodec` wraps :class:`DeviceSession` (NTCB/FLEX, or the seed-000 text dialect detected
from the first bytes). The only translation is at identification: the ``*>S`` handshake reply becomes an
:class:`Identify` (accept: the ``*<S`` answer; refuse: close without one, DOC p. 17), and a text
connection announces the IMEI of its first frame with an Identify of its own (its frames carry the IMEI;
nothing to answer). Every other output passes through untouched.

Persisted device state (``devices.protocol_state``): the accepted FLEX negotiation
``{"protocol_version", "struct_version", "bit_count", "mask"}`` (mask as hex), so ``fleet redecode`` can
decode stored FLEX frames, which carry no layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from fleet.protocol.base import (
    Command,
    CustomCommand,
    Identify,
    Output,
    OutputCommand,
    Reboot,
    RequestPosition,
    ResendArchive,
    Telemetry,
    UnsupportedCommand,
)

from .framing import MAX_FRAME_BYTES
from .layout import FULL_MASK_BITS
from .ntcb import DEVICE_ID, SERVER_ID, command, command_set_outputs
from .outputs import RejectCode, Rejected, Reply, ReplyKind
from .session import NavtelecomSession, Negotiation, decode_frame
from .text import DeviceSession, Dialect, TextSession

__all__ = [
    "ARCHIVE_PROTOCOL",
    "TEXT_ARCHIVE_PROTOCOL",
    "NavtelecomCodec",
    "NavtelecomRedecoder",
    "check_command",
    "command_bytes",
    "frame_type_of",
    "negotiation_from_state",
    "state_of",
]

ARCHIVE_PROTOCOL = "navtelecom"
TEXT_ARCHIVE_PROTOCOL = "navtelecom_text"
# The server number in *!REP_FL (the device's first, main server).
REPLAY_SERVER = 1
_HANDSHAKE = ReplyKind.HANDSHAKE


def frame_type_of(raw: bytes) -> str:
    """Return a short label of a raw frame for `raw_frames.frame_type` (from its first bytes only)."""
    if raw[:1] == b"@":
        return "ntcb"
    if raw[:1] == b"~" and len(raw) > 1 and 0x41 <= raw[1] <= 0x5A:
        return chr(raw[1])
    if raw[:1] == b"\x7f":
        return "ping"
    return "unknown"


def state_of(negotiation: Negotiation | None) -> dict[str, Any] | None:
    """Return the persisted form of a negotiation."""
    if negotiation is None:
        return None
    return {
        "protocol_version": negotiation.protocol_version,
        "struct_version": negotiation.struct_version,
        "bit_count": negotiation.bit_count,
        "mask": negotiation.mask.hex(),
    }


def negotiation_from_state(state: Mapping[str, Any] | None, field100_size: int = 2) -> Negotiation | None:
    """Return the negotiation a device's stored state describes (None when it never negotiated)."""
    if not state or not state.get("mask"):
        return None
    mask = bytes.fromhex(str(state["mask"]))
    struct_version = int(state.get("struct_version") or 30)
    bits = state.get("bit_count")
    if not bits:
        # Rows migrated from the old columns keep the mask bytes, not the bit count: the version's full
        # size fits whenever the byte count matches it; otherwise every bit of the mask counts.
        bits = FULL_MASK_BITS.get(struct_version)
        if bits is None or (bits + 7) // 8 != len(mask):
            bits = min(len(mask) * 8, 255)
    protocol_version = int(state.get("protocol_version") or struct_version)
    return Negotiation(protocol_version, struct_version, int(bits), mask, field100_size)


def command_bytes(cmd: Command, receiver_id: int = DEVICE_ID, sender_id: int = SERVER_ID) -> bytes:
    """Encode a neutral command as an NTCB packet (spec §4.1); raise UnsupportedCommand."""
    if isinstance(cmd, CustomCommand):
        if not cmd.text.startswith(("*!", "*?")):
            raise UnsupportedCommand("Navtelecom commands start with *! (command) or *? (query)")
        try:
            return command(cmd.text, receiver_id, sender_id)
        except (UnicodeEncodeError, ValueError) as err:
            raise UnsupportedCommand(f"Navtelecom command text must be ASCII: {err}") from err
    if isinstance(cmd, OutputCommand):
        try:
            return command_set_outputs({cmd.index: cmd.on}, receiver_id, sender_id)
        except ValueError as err:
            raise UnsupportedCommand(str(err)) from err
    if isinstance(cmd, RequestPosition):
        return command("*?A", receiver_id, sender_id)
    if isinstance(cmd, Reboot):
        return command("*!DEV_RESET", receiver_id, sender_id)
    if isinstance(cmd, ResendArchive):
        if cmd.end < cmd.start:
            raise UnsupportedCommand("resend_archive: 'to' is before 'from'")
        start, end = cmd.start.astimezone(UTC), cmd.end.astimezone(UTC)
        text = f"*!REP_FL {REPLAY_SERVER},{start:%d.%m.%y/%H:%M:%S},{end:%d.%m.%y/%H:%M:%S}"
        return command(text, receiver_id, sender_id)
    raise UnsupportedCommand(f"Navtelecom has no command {getattr(cmd, 'type', cmd)!r}")


def check_command(cmd: Command) -> None:
    """Raise UnsupportedCommand when Navtelecom cannot carry ``cmd`` (checked before it is queued)."""
    command_bytes(cmd)


class NavtelecomCodec:
    """The CodecSession of one Navtelecom connection."""

    __slots__ = ("_announced", "_session")

    def __init__(
        self, *, allow_text: bool = True, field100_size: int = 2, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> None:
        self._session = DeviceSession(
            allow_text=allow_text, field100_size=field100_size, max_frame_bytes=max_frame_bytes
        )
        self._announced: str | None = None  # identity announced for the text dialect

    @classmethod
    def from_settings(cls, settings: Any) -> NavtelecomCodec:
        """Return a session configured from the server settings."""
        return cls(allow_text=settings.text_dialect_enabled, field100_size=settings.flex_field100_size)

    def feed(self, data: bytes) -> list[Output]:
        """Consume received bytes (see NavtelecomSession.feed); handshakes come out as Identify."""
        outputs: list[Any] = self._session.feed(data)
        for position, output in enumerate(outputs):
            kind = type(output)
            if kind is Reply and output.kind is _HANDSHAKE:
                raw = output.raw
                identity = bytes(raw[20:]).rstrip(b"\x00 \r\n").decode("ascii")
                outputs[position] = Identify(identity, output.data, b"", raw)
            elif kind is Telemetry and self._announced is None and self._text:
                imei = output.records[0].imei
                self._announced = imei
                outputs.insert(position, Identify(imei, b"", b"", b""))
        return outputs

    @property
    def _text(self) -> bool:
        return self._session.dialect is Dialect.TEXT

    @property
    def identity(self) -> str | None:
        return self._session.imei

    @property
    def ready(self) -> bool:
        inner = self._session.session
        if inner is None:
            return False
        if isinstance(inner, TextSession):
            return inner.imei is not None
        return inner.layout is not None

    @property
    def state(self) -> dict[str, Any] | None:
        inner = self._session.session
        if isinstance(inner, NavtelecomSession):
            return state_of(inner.negotiation)
        return None

    @property
    def buffered(self) -> int:
        return self._session.buffered

    @property
    def archive_protocol(self) -> str:
        return TEXT_ARCHIVE_PROTOCOL if self._text else ARCHIVE_PROTOCOL

    def frame_type(self, raw: bytes) -> str:
        return frame_type_of(raw)

    def encode_command(self, cmd: Command) -> bytes:
        inner = self._session.session
        if not isinstance(inner, NavtelecomSession):
            raise UnsupportedCommand("the Navtelecom text dialect takes no commands")
        return command_bytes(cmd, inner.device_id, inner.server_id)


class NavtelecomRedecoder:
    """Decodes stored Navtelecom frames in reception order, following every stored ``*>FLEX``."""

    _SKIPPED = frozenset({"handshake", "answer", "unframable", "ping"})

    def __init__(self, state: Mapping[str, Any] | None, settings: Any = None) -> None:
        self.field100_size = getattr(settings, "flex_field100_size", 2)
        self.negotiation = negotiation_from_state(state, self.field100_size)

    def decode(self, frame_type: str | None, data: bytes) -> Output | None:
        if frame_type in self._SKIPPED or not data:
            return None
        if frame_type == "negotiation":
            self.negotiation = self._renegotiate(data) or self.negotiation
            return None
        if data[:1] == b"~" and len(data) > 2 and 0x30 <= data[2] <= 0x39:  # a text-dialect frame
            outputs = TextSession().feed(data)
            if len(outputs) == 1:
                return outputs[0]
            return Rejected(RejectCode.BAD_FORMAT, "not one text frame", data)
        return decode_frame(data, self.negotiation)

    def _renegotiate(self, data: bytes) -> Negotiation | None:
        session = NavtelecomSession.restore(self.negotiation)
        session.negotiation = None
        outputs = session.feed(data)
        if len(outputs) == 1 and isinstance(outputs[0], Reply) and outputs[0].kind is ReplyKind.NEGOTIATION:
            return session.negotiation
        return None
