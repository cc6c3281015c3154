"""AVL data: records of Codec 8 (0x08), Codec 8 Extended (0x8E) and Codec 16 (0x10) (spec §2, §3, §6).

A record's IO values come out raw (the unsigned big-endian integer, or bytes for NX elements), in wire
order, as ``(id, value)`` pairs (an id may repeat; spec §3.4). Names, signedness and scales are applied
one layer up, from the IO table (:mod:`.io_table`). Every count is checked: a record set that does not
consume exactly its bytes, or whose group counts do not add up to the total, is a :class:`DecodeError`.
"""

from __future__ import annotations

import struct
import zlib
from functools import cache
from typing import NamedTuple

__all__ = [
    "CODEC_8",
    "CODEC_8E",
    "CODEC_16",
    "TELEMETRY_CODECS",
    "AvlRecord",
    "DecodeError",
    "decode_records",
]

CODEC_8 = 0x08
CODEC_8E = 0x8E
CODEC_16 = 0x10
TELEMETRY_CODECS = {CODEC_8: "codec8", CODEC_8E: "codec8e", CODEC_16: "codec16"}

# timestamp (ms), priority, longitude, latitude (1e-7 degrees), altitude (signed m), angle, satellites, speed
_HEAD = struct.Struct(">QBiihHBH")
_U16 = struct.Struct(">H")
_NX_HEAD = struct.Struct(">HH")
_WIDTHS = ((1, "B"), (2, "H"), (4, "I"), (8, "Q"))


class DecodeError(ValueError):
    """AVL data whose structure is inconsistent (treated like a bad CRC: no ACK)."""


class AvlRecord(NamedTuple):
    """One AVL record, raw (see the module docs)."""

    timestamp_ms: int
    priority: int
    longitude: float
    latitude: float
    altitude: int
    angle: int
    satellites: int
    speed: int
    event_id: int
    generation_type: int | None  # Codec 16 only
    io: tuple[tuple[int, int | bytes], ...]
    fingerprint: int  # CRC-32 of the record's bytes: tells apart records that share a timestamp


@cache
def _group(id_code: str, value_code: str, count: int) -> struct.Struct:
    return struct.Struct(">" + (id_code + value_code) * count)


def decode_records(data: bytes, codec: int, count: int, start: int, end: int) -> list[AvlRecord]:
    """Decode ``count`` records of ``codec`` from ``data[start:end]``, which they must fill exactly."""
    wide = codec != CODEC_8  # 8E and 16 have 2-byte IO ids
    id_code = "H" if wide else "B"
    counts_wide = codec == CODEC_8E  # 8E also has 2-byte counts
    records: list[AvlRecord] = []
    pos = start
    try:
        for _ in range(count):
            first = pos
            timestamp, priority, lon, lat, altitude, angle, satellites, speed = _HEAD.unpack_from(data, pos)
            pos += 24
            generation = None
            if codec == CODEC_8:
                event_id, total = data[pos], data[pos + 1]
                pos += 2
            elif codec == CODEC_16:
                event_id = _U16.unpack_from(data, pos)[0]
                generation, total = data[pos + 2], data[pos + 3]
                pos += 4
            else:
                event_id, total = struct.unpack_from(">HH", data, pos)
                pos += 4
            pairs: list[tuple[int, int | bytes]] = []
            seen = 0
            for _width, value_code in _WIDTHS:
                if counts_wide:
                    n = _U16.unpack_from(data, pos)[0]
                    pos += 2
                else:
                    n = data[pos]
                    pos += 1
                if n:
                    layout = _group(id_code, value_code, n)
                    values = layout.unpack_from(data, pos)
                    pos += layout.size
                    pairs.extend(zip(values[0::2], values[1::2], strict=True))
                    seen += n
            if codec == CODEC_8E:
                n = _U16.unpack_from(data, pos)[0]
                pos += 2
                for _ in range(n):
                    element, length = _NX_HEAD.unpack_from(data, pos)
                    pos += 4
                    value = bytes(data[pos : pos + length])
                    if len(value) != length:
                        raise DecodeError("an NX element runs past the packet")
                    pos += length
                    pairs.append((element, value))
                seen += n
            if seen != total:
                raise DecodeError(f"IO counts add up to {seen}, the record declares {total}")
            if pos > end:
                raise DecodeError("records run past the packet")
            records.append(
                AvlRecord(
                    timestamp,
                    priority,
                    lon / 1e7,
                    lat / 1e7,
                    altitude,
                    angle,
                    satellites,
                    speed,
                    event_id,
                    generation,
                    tuple(pairs),
                    zlib.crc32(memoryview(data)[first:pos]),
                )
            )
    except (struct.error, IndexError) as err:
        raise DecodeError(f"records are shorter than declared: {err}") from err
    if pos != end:
        raise DecodeError(f"{end - pos} bytes left after {count} records")
    return records
