"""A simulated Teltonika FMB tracker for :mod:`fleet.simulate` (device side: the one module doing I/O).

It logs in with its IMEI packet (expects ``01``) and uploads AVL packets of the chosen codec whose
records carry a typical FMB IO set (ignition, movement, GSM signal, voltages, odometer, GNSS quality;
with ``can`` also CAN/LVCAN engine, speed and fuel elements). Each ACK must be the record count.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from .avl import CODEC_8, CODEC_8E, CODEC_16
from .encoder import IoValue, avl_packet, encode_record, imei_packet

__all__ = ["CODECS", "BadReply", "TeltonikaModel", "new_device"]

CODECS = {"8": CODEC_8, "8E": CODEC_8E, "16": CODEC_16}


class BadReply(ValueError):
    """The server answered something a device would not accept."""


class TeltonikaModel:
    """One simulated Teltonika tracker (``options``: ``codec`` 8/8E/16, ``can`` elements or not)."""

    ack_size = 4

    def __init__(self, imei: str, rng: random.Random, *, codec: str = "8E", can: bool = False) -> None:
        self.imei = imei
        self.codec = CODECS[codec.upper()]
        self.lat = rng.uniform(45.0, 60.0)
        self.lon = rng.uniform(20.0, 40.0)
        self.altitude = rng.randrange(50, 300)
        self.speed = rng.randrange(0, 90)
        self.angle = rng.randrange(360)
        self.odometer = rng.randrange(10_000, 900_000_000)
        self.can = can

    async def login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, within: float) -> None:
        writer.write(imei_packet(self.imei))
        answer = await asyncio.wait_for(reader.readexactly(1), within)
        if answer != b"\x01":
            raise BadReply(f"IMEI answered {answer.hex()}")

    def _io(self, index: int) -> list[IoValue]:
        io: list[IoValue] = [
            (239, 1, 1),
            (240, 1, 1),
            (80, 1, 1),
            (21, 1, 4),
            (69, 1, 1),
            (181, 2, 12),
            (182, 2, 8),
            (66, 2, 24_080),
            (67, 2, 4_100),
            (68, 2, 0),
            (16, 4, self.odometer + index * 10),
            (241, 4, 24_602),
        ]
        if self.can:
            io += [
                (81, 1, self.speed),
                (82, 1, 23),
                (85, 2, 1450),
                (84, 2, 1234),
                (87, 4, 123_456_000 + index),
            ]
        return io

    def record(self, index: int, seconds: float) -> bytes:
        drift = (index % 3600) * 1e-5
        io = self._io(index)
        if self.codec == CODEC_8:
            io = [(element, size, value) for element, size, value in io if element < 256]
        return encode_record(
            self.codec,
            timestamp_ms=int(seconds * 1000),
            priority=0,
            longitude=self.lon + drift,
            latitude=self.lat + drift,
            altitude=self.altitude,
            angle=self.angle,
            satellites=11,
            speed=self.speed,
            event_id=0,
            io=io,
        )

    def frame(self, records: Sequence[bytes]) -> bytes:
        return avl_packet(self.codec, records)

    def ack(self, count: int) -> bytes:
        return count.to_bytes(4, "big")


def new_device(imei: str, rng: random.Random, **options: object) -> TeltonikaModel:
    """The simulation entry point every protocol package provides (see fleet.simulate.engine)."""
    return TeltonikaModel(
        imei, rng, codec=str(options.get("codec", "8E")), can=bool(options.get("can", False))
    )
