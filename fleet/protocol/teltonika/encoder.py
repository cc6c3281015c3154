"""Device-side encoder: the bytes a Teltonika tracker sends, for tests and the simulator.

The inverse of the decoder: :func:`imei_packet`, :func:`encode_record` + :func:`avl_packet` (Codec 8, 8E,
16), :func:`response` (a Codec 12 answer).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from .avl import CODEC_8, CODEC_8E, CODEC_16
from .messages import TYPE_RESPONSE, crc16_arc, encode_message

__all__ = ["IoValue", "avl_packet", "encode_record", "imei_packet", "response"]

# (IO id, width in bytes: 1, 2, 4, 8, or 0 for a Codec 8E NX element, value)
IoValue = tuple[int, int, int | bytes]
_HEAD = struct.Struct(">QBiihHBH")
_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def imei_packet(imei: str) -> bytes:
    """Return the login packet: U16 length + the IMEI digits."""
    data = imei.encode("ascii")
    return len(data).to_bytes(2, "big") + data


def encode_record(
    codec: int,
    *,
    timestamp_ms: int,
    priority: int = 0,
    longitude: float = 0.0,
    latitude: float = 0.0,
    altitude: int = 0,
    angle: int = 0,
    satellites: int = 0,
    speed: int = 0,
    event_id: int = 0,
    generation_type: int = 7,
    io: Iterable[IoValue] = (),
) -> bytes:
    """Encode one AVL record for ``codec`` (IO grouped by width, in the given order within a group)."""
    elements = list(io)
    head = _HEAD.pack(
        timestamp_ms,
        priority,
        round(longitude * 1e7),
        round(latitude * 1e7),
        altitude,
        angle,
        satellites,
        speed,
    )
    wide = codec != CODEC_8
    id_code = "H" if wide else "B"
    count_code = "H" if codec == CODEC_8E else "B"
    if codec == CODEC_8:
        out = head + struct.pack(">BB", event_id, len(elements))
    elif codec == CODEC_16:
        out = head + struct.pack(">HBB", event_id, generation_type, len(elements))
    elif codec == CODEC_8E:
        out = head + struct.pack(">HH", event_id, len(elements))
    else:
        raise ValueError(f"codec 0x{codec:02x} carries no AVL records")
    for width, code in _CODES.items():
        group = [(element, value) for element, size, value in elements if size == width]
        out += struct.pack(">" + count_code, len(group))
        for element, value in group:
            out += struct.pack(">" + id_code + code, element, value)
    nx = [(element, value) for element, size, value in elements if size == 0]
    if nx and codec != CODEC_8E:
        raise ValueError("variable-length (NX) elements exist in Codec 8E only")
    if codec == CODEC_8E:
        out += struct.pack(">H", len(nx))
        for element, value in nx:
            data = bytes(value) if isinstance(value, bytes | bytearray) else b""
            out += struct.pack(">HH", element, len(data)) + data
    return out


def avl_packet(codec: int, records: Sequence[bytes]) -> bytes:
    """Return a whole AVL data packet (preamble, length, codec, counts, records, CRC)."""
    if not 1 <= len(records) <= 255:
        raise ValueError("an AVL packet holds 1..255 records")
    body = bytes((codec, len(records))) + b"".join(records) + bytes((len(records),))
    return b"\x00\x00\x00\x00" + len(body).to_bytes(4, "big") + body + crc16_arc(body).to_bytes(4, "big")


def response(text: str | bytes) -> bytes:
    """Return the device's Codec 12 answer carrying ``text``."""
    payload = text.encode("ascii") if isinstance(text, str) else bytes(text)
    return encode_message(payload, kind=TYPE_RESPONSE)
