"""GPRS messages: Codec 12 commands and answers, Codec 13/14/15 (spec §5), and the CRC-16 (spec §2.2).

Frame (both directions): ``00000000`` + U32 data size + codec + quantity 1 + type + U32 payload size +
payload + quantity 2 + U32 CRC, the CRC-16/ARC (IBM) over codec … quantity 2.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fastcrc import crc16

__all__ = [
    "CODEC_12",
    "CODEC_13",
    "CODEC_14",
    "CODEC_15",
    "TYPE_COMMAND",
    "TYPE_NOT_EXECUTED",
    "TYPE_RESPONSE",
    "Message",
    "MessageError",
    "crc16_arc",
    "decode_message",
    "encode_message",
    "printable",
]

CODEC_12 = 0x0C
CODEC_13 = 0x0D
CODEC_14 = 0x0E
CODEC_15 = 0x0F
TYPE_COMMAND = 0x05
TYPE_RESPONSE = 0x06
TYPE_NOT_EXECUTED = 0x11  # Codec 14: the IMEI in the command is not the device's
_HEADER = struct.Struct(">IIBBBI")


def crc16_arc(data: bytes | memoryview) -> int:
    """Return the CRC-16/ARC ("CRC-16/IBM") of ``data``: poly 0xA001 reflected, init 0 (check 0xBB3D)."""
    return int(crc16.arc(bytes(data)))


class MessageError(ValueError):
    """A GPRS message whose structure is inconsistent."""


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded Codec 12/13/14/15 message."""

    codec: int
    type: int
    payload: bytes  # after the timestamp (13) or IMEI (14) fields
    imei: str | None = None  # Codec 14
    timestamp: int | None = None  # Codec 13, Unix seconds


def encode_message(payload: bytes, *, codec: int = CODEC_12, kind: int = TYPE_COMMAND) -> bytes:
    """Return a whole message frame carrying ``payload`` (a command when ``kind`` is 0x05)."""
    body = bytes((codec, 1, kind)) + len(payload).to_bytes(4, "big") + payload + b"\x01"
    return b"\x00\x00\x00\x00" + len(body).to_bytes(4, "big") + body + crc16_arc(body).to_bytes(4, "big")


def decode_message(frame: bytes) -> Message:
    """Decode a CRC-checked message frame (raises MessageError)."""
    if len(frame) < 20:
        raise MessageError("message shorter than its fixed fields")
    _zero, size, codec, quantity, kind, length = _HEADER.unpack_from(frame)
    if size != length + 8 or len(frame) != 12 + size:
        raise MessageError("payload size does not match the data size")
    if quantity != 1 or frame[-5] != quantity:
        raise MessageError("message quantities must both be 1")
    payload = frame[15 : 15 + length]
    if codec == CODEC_14:
        if length < 8:
            raise MessageError("Codec 14 payload shorter than its IMEI field")
        return Message(codec, kind, payload[8:], imei=payload[:8].hex().lstrip("0") or "0")
    if codec == CODEC_13 and length >= 4:
        return Message(codec, kind, payload[4:], timestamp=int.from_bytes(payload[:4], "big"))
    return Message(codec, kind, payload)


def printable(data: bytes) -> str:
    """Return text with bytes outside printable ASCII escaped as \\xNN (binary answers stay readable)."""
    if all(0x20 <= byte < 0x7F or byte in (0x0A, 0x0D, 0x09) for byte in data):
        return data.decode("ascii")
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in data)
