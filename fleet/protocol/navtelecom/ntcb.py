"""NTCB packets: header, server replies, server commands and the text of device answers (DOC §1.1, §2, App. Г)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .checksum import xor8
from .framing import NTCB_PREAMBLE
from .outputs import DeviceVersion

__all__ = [
    "DEVICE_ID",
    "SERVER_ID",
    "NtcbHeader",
    "build_packet",
    "command",
    "command_set_outputs",
    "command_sync",
    "parse_header",
    "parse_version_answer",
    "query_state",
    "query_version",
    "reply_packet",
]

_HEADER = struct.Struct("<4sIIHBB")
# Default ids (DOC p. 14): the device sends IDr=1 (server), IDs=0 (itself); the server answers swapped.
SERVER_ID = 1
DEVICE_ID = 0


@dataclass(frozen=True, slots=True)
class NtcbHeader:
    """The 16-byte NTCB header."""

    preamble: bytes
    receiver_id: int
    sender_id: int
    length: int
    data_checksum: int  # CSd
    header_checksum: int  # CSp


def parse_header(packet: bytes) -> NtcbHeader:
    """Return the header of an NTCB packet (at least 16 bytes; checksums are the framer's job)."""
    return NtcbHeader(*_HEADER.unpack_from(packet))


def build_packet(body: bytes, receiver_id: int, sender_id: int, preamble: bytes = NTCB_PREAMBLE) -> bytes:
    """Wrap ``body`` into an NTCB packet with correct CSd/CSp."""
    if len(body) > 0xFFFF:
        raise ValueError("an NTCB body holds at most 65535 bytes")
    head = _HEADER.pack(preamble, receiver_id, sender_id, len(body), xor8(body), 0)[:15]
    return head + bytes((xor8(head),)) + body


def reply_packet(request: bytes, body: bytes) -> bytes:
    """Answer an NTCB packet: same preamble, the request's receiver/sender ids swapped."""
    header = parse_header(request)
    return build_packet(body, header.sender_id, header.receiver_id, header.preamble)


def command(text: str | bytes, receiver_id: int = DEVICE_ID, sender_id: int = SERVER_ID) -> bytes:
    """Encode a server command or query (``*!...``/``*?...``) as an NTCB packet, e.g. ``*!SETOUT 1Y``.

    Use the device's ids from its handshake (``NavtelecomSession.device_id``/``server_id``) when they
    differ from the defaults.
    """
    body = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if not body.startswith((b"*!", b"*?")):
        raise ValueError("server commands start with *! (command) or *? (query)")
    return build_packet(body, receiver_id, sender_id)


def command_set_outputs(
    states: dict[int, bool], receiver_id: int = DEVICE_ID, sender_id: int = SERVER_ID
) -> bytes:
    """Encode ``*!SETOUT 1Y,2N...`` switching outputs (1-based numbers) on (Y) or off (N)."""
    if not states or not all(1 <= number <= 32 for number in states):
        raise ValueError("output numbers must be within 1..32")
    text = ",".join(f"{number}{'Y' if on else 'N'}" for number, on in sorted(states.items()))
    return command(f"*!SETOUT {text}", receiver_id, sender_id)


def command_sync(server_index: int, receiver_id: int = DEVICE_ID, sender_id: int = SERVER_ID) -> bytes:
    """Encode ``*!SYNC:<index>``: tell the device the last record index the server holds."""
    if not 0 <= server_index <= 0xFFFFFFFF:
        raise ValueError("record indexes are U32")
    return command(f"*!SYNC:{server_index}", receiver_id, sender_id)


def query_version(receiver_id: int = DEVICE_ID, sender_id: int = SERVER_ID) -> bytes:
    """Encode ``*?V`` (model and firmware; answered by ``*#V:...``)."""
    return command("*?V", receiver_id, sender_id)


def query_state(receiver_id: int = DEVICE_ID, sender_id: int = SERVER_ID) -> bytes:
    """Encode ``*?A`` (current state; answered by ``*#A<record>``)."""
    return command("*?A", receiver_id, sender_id)


def parse_version_answer(text: str) -> DeviceVersion | None:
    """Parse ``*#V:<model>:<v1.v2.v3>:<dd.mm.yy>:<locale>``; None if ``text`` is not such an answer."""
    if not text.startswith("*#V:"):
        return None
    parts = text[4:].rstrip("\x00").strip().split(":")
    if len(parts) < 3:
        return None
    model, firmware, date = (part.strip() for part in parts[:3])
    locale = parts[3].strip() if len(parts) > 3 else ""
    if not model or not firmware:
        return None
    return DeviceVersion(model=model, firmware=firmware, date=date, locale=locale)
