"""A simulated Navtelecom tracker for :mod:`fleet.simulate` (device side: the one module here doing I/O).

Each device logs in with ``*>S`` and ``*>FLEX`` (answers checked byte for byte), then uploads ``~A``
arrays. Frames are built with the codec's own encoder: each device encodes one template record once, and
every record is that template with its index, times and coordinates written in place, which keeps the
simulator cheap enough to load a server from the same machine. FLEX times are whole seconds.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Sequence

from .encoder import archive, build_record, flex_negotiation, handshake
from .fields import field_spec
from .flex import ack_archive
from .layout import FULL_MASK_BITS, FlexLayout, layout_for_fields

__all__ = ["CAN_NOT_AVAILABLE", "CAN_RUNNING", "FLEX_PROFILES", "BadReply", "NavtelecomModel", "new_device"]

# Field sets per FLEX version. 2.0 is the mask of a real S-2551 capture (Traccar testDecodeFlex20, 70-byte
# records); 1.0 the FLEX 1.0 capture of the same suite; 3.0 adds high-precision temperatures and user
# parameters from the 3.0 range.
_FLEX10_FIELDS = (
    *range(1, 17),
    19,
    20,
    29,
    31,
    37,
    45,
    53,
    54,
    55,
    56,
    57,
    63,
    64,
    65,
    69,
)
_FLEX20_FIELDS = (*range(1, 21), 29, 37, 45, 69, 70, 71)
_FLEX30_FIELDS = (*_FLEX20_FIELDS, 163, 164, 206, 207, 223, 238)
# FLEX 2.0 with the CAN fields a truck tracker reports (29 fields: 1-20 and the nine CAN fields below). A
# tracker without CAN values sends them as "not available", as a real one with an idle CAN adapter does.
_FLEX20_CAN_FIELDS = (*range(1, 21), 53, 54, 55, 56, 57, 63, 64, 65, 69)
FLEX_PROFILES: dict[str, tuple[int, tuple[int, ...]]] = {
    "1.0": (10, _FLEX10_FIELDS),
    "2.0": (20, _FLEX20_FIELDS),
    "2.0-can": (20, _FLEX20_CAN_FIELDS),
    "3.0": (30, _FLEX30_FIELDS),
}
NTCB_HEADER = 16
PERIODIC_EVENT = 0x1250
# CAN fields (53-69) as a tracker without a CAN adapter reports them ("not available"), and as one on a
# running truck does. Wire values, as FlexRecord.fields returns them.
CAN_NOT_AVAILABLE = {
    53: 0x7FFF,
    54: -1.0,
    55: 0xFFFF,
    56: -128,
    57: -1.0,
    63: 0xFF,
    64: 0xFF,
    65: 0xFF,
    69: 0xFF,
}
CAN_RUNNING = {53: 0x8000 | 62, 54: 12345.5, 55: 1450, 56: 86, 57: 234567.5, 63: 23, 64: 0, 65: 41, 69: 57}

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


class BadReply(ValueError):
    """The server answered something a device would not accept."""


class _Profile:
    """The negotiated layout and where the per-record values sit in an encoded record."""

    def __init__(self, flex: str) -> None:
        if flex not in FLEX_PROFILES:
            raise ValueError(f"unknown FLEX version {flex!r}; use one of {', '.join(FLEX_PROFILES)}")
        self.version, fields = FLEX_PROFILES[flex]
        self.layout: FlexLayout = layout_for_fields(fields)
        self.bit_count = FULL_MASK_BITS[self.version]
        self.negotiation_reply = b"*<FLEX" + bytes((0xB0, self.version, self.version))
        offsets: dict[int, int] = {}
        position = 0
        for number in self.layout.fields:
            offsets[number] = position
            position += field_spec(number, self.layout.field100_size).size
        self.offsets = offsets
        self.negotiation = flex_negotiation(
            self.layout.fields, version=self.version, bit_count=self.bit_count
        )

    def template(self, rng: random.Random, can: bool) -> tuple[bytearray, float, float]:
        lat = rng.uniform(45.0, 60.0)
        lon = rng.uniform(25.0, 60.0)
        record = build_record(
            self.layout,
            index=0,
            event_code=PERIODIC_EVENT,
            device_time=0,
            fix_time=0,
            valid=True,
            satellites=11,
            latitude=lat,
            longitude=lon,
            altitude_m=rng.uniform(50, 300),
            speed_kmh=rng.uniform(0, 90),
            course=rng.randrange(360),
            odometer_km=rng.uniform(100, 90000),
            power_v=12.6,
            battery_v=4.1,
            hdop=0.8,
            pdop=1.1,
            fields={
                n: v for n, v in (CAN_RUNNING if can else CAN_NOT_AVAILABLE).items() if n in self.offsets
            },
        )
        return bytearray(record), lat, lon


_PROFILES: dict[str, _Profile] = {}


def profile(flex: str) -> _Profile:
    """Return the (shared) profile of a FLEX version."""
    known = _PROFILES.get(flex)
    if known is None:
        known = _PROFILES[flex] = _Profile(flex)
    return known


async def _read_ntcb(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(NTCB_HEADER)
    if header[:4] != b"@NTC":
        raise BadReply(f"not an NTCB reply: {header.hex()}")
    length = header[12] | header[13] << 8
    return await reader.readexactly(length)


class NavtelecomModel:
    """One simulated Navtelecom tracker (``options``: ``flex`` version, ``can`` values or not)."""

    ack_size = 4

    def __init__(self, imei: str, rng: random.Random, *, flex: str = "2.0", can: bool = False) -> None:
        self.imei = imei
        self.profile = profile(flex)
        self.template, self.lat, self.lon = self.profile.template(rng, can)

    async def login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, within: float) -> None:
        """Handshake and FLEX negotiation; BadReply on a wrong answer."""
        writer.write(handshake(self.imei))
        body = await asyncio.wait_for(_read_ntcb(reader), within)
        if body != b"*<S":
            raise BadReply(f"handshake answered {body!r}")
        writer.write(self.profile.negotiation)
        body = await asyncio.wait_for(_read_ntcb(reader), within)
        if body != self.profile.negotiation_reply:
            raise BadReply(f"negotiation answered {body!r}")

    def record(self, index: int, seconds: float) -> bytes:
        """Encode record ``index`` taken at ``seconds`` (epoch; whole seconds on the wire)."""
        offsets = self.profile.offsets
        record = self.template
        whole = int(seconds)
        _U32.pack_into(record, offsets[1], index)
        _U32.pack_into(record, offsets[3], whole)
        if 9 in offsets:
            _U32.pack_into(record, offsets[9], whole)
        if 10 in offsets:
            drift = (index % 3600) * 1e-5
            _I32.pack_into(record, offsets[10], round((self.lat + drift) * 600000))
            _I32.pack_into(record, offsets[11], round((self.lon + drift) * 600000))
        return bytes(record)

    def frame(self, records: Sequence[bytes]) -> bytes:
        return archive(records)

    def ack(self, count: int) -> bytes:
        return ack_archive(count)


def new_device(imei: str, rng: random.Random, **options: object) -> NavtelecomModel:
    """The simulation entry point every protocol package provides (see fleet.simulate.engine).

    ``can``: every device reports CAN values; ``can_share`` (0-1): that share of the devices does, picked by
    IMEI (of 100 consecutive IMEIs, exactly ``round(100 * can_share)``), the others report "not available".
    """
    can = bool(options.get("can", False))
    share = float(options.get("can_share", 0.0))  # type: ignore[arg-type]
    if share > 0 and int(imei) % 100 < round(100 * share):
        can = True
    return NavtelecomModel(imei, rng, flex=str(options.get("flex", "2.0")), can=can)
