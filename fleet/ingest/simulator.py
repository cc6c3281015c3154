"""Simulated Navtelecom trackers: real NTCB/FLEX clients for load tests, demos and crash tests.

Each simulated device behaves like a tracker with a black box: it records at its share of ``rate``,
connects, sends ``*>S`` and ``*>FLEX``, uploads ``~A`` arrays of up to ``records_per_frame`` records and
waits for each acknowledgement before sending more. Only an acknowledged frame leaves its black box. Without
an ACK within ``ack_timeout`` (or when the connection breaks) it reconnects and sends the same frame again -
reconnecting rather than resending on the same connection, because a late ACK of the first copy would
otherwise be mistaken for the ACK of the next frame (FLEX ACKs carry a count, not an index).

Frames are built with the codec's encoder (:mod:`fleet.protocol.navtelecom.encoder`): each device encodes
one template record once, and every record is that template with its index, times and coordinates
written in place, which keeps the simulator cheap enough to load a server from the same machine.

``SimulationResult.acked`` tells, per IMEI, how many records (from index ``first_index`` on) were
acknowledged: exactly what a test must find in the database after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import resource
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet.protocol.navtelecom import (
    FlexLayout,
    ack_archive,
    archive,
    build_record,
    flex_negotiation,
    handshake,
    layout_for_fields,
)
from fleet.protocol.navtelecom.fields import field_spec
from fleet.protocol.navtelecom.layout import FULL_MASK_BITS

# Field sets per FLEX version. 2.0 is the mask of a real S-2551 capture (Traccar testDecodeFlex20, 70-byte
# records); 1.0 the FLEX 1.0 capture of the same suite; 3.0 adds high-precision temperatures and user
# parameters from the 3.0 range.
_FLEX10_FIELDS = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
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
_FLEX20_FIELDS = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    29,
    37,
    45,
    69,
    70,
    71,
)
_FLEX30_FIELDS = (*_FLEX20_FIELDS, 163, 164, 206, 207, 223, 238)
FLEX_PROFILES: dict[str, tuple[int, tuple[int, ...]]] = {
    "1.0": (10, _FLEX10_FIELDS),
    "2.0": (20, _FLEX20_FIELDS),
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
CONNECT_CONCURRENCY = 1000  # simultaneous connection attempts, to stay within the server's listen backlog
RECONNECT_MIN_SEC = 0.2
RECONNECT_MAX_SEC = 3.0
EPOCH_BASE = 1_735_689_600  # 2025-01-01: device clocks start here, one second per record


@dataclass
class SimulationConfig:
    """What to simulate."""

    host: str = "127.0.0.1"
    port: int = 5221
    devices: int = 10
    rate: float = 100.0  # records per second over all devices; 0: as fast as ACKs allow
    duration: float = 10.0  # seconds of recording; then in-flight frames are finished
    flex: str = "2.0"
    records_per_frame: int = 10
    ack_timeout: float = 10.0
    drain_timeout: float = 30.0  # after `duration`, how long to keep trying to deliver what is recorded
    first_imei: int = 860000000000001
    first_index: int = 1
    connect_timeout: float = 10.0
    deliver_backlog: bool = False  # also upload records that could not be sent during `duration`
    can: bool = False  # report CAN values (fields 53-69) instead of "not available"
    duration_from_login: bool = False  # count `duration` from the moment every device is logged in
    seed: int | None = None


@dataclass
class DeviceTally:
    imei: str
    generated: int = 0  # records recorded into the black box
    acked: int = 0  # records acknowledged (a prefix of the generated ones)


@dataclass
class SimulationResult:
    """What the simulated devices saw."""

    config: SimulationConfig
    elapsed_s: float = 0.0
    records_sent: int = 0  # first transmissions
    records_resent: int = 0
    records_acked: int = 0
    frames_sent: int = 0
    frames_acked: int = 0
    retransmissions: int = 0
    connections: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    ack_timeouts: int = 0
    bad_replies: int = 0
    latencies: array = field(default_factory=lambda: array("d"))  # seconds per acknowledged frame
    devices: dict[str, DeviceTally] = field(default_factory=dict)
    logged_in: int = 0  # devices that completed handshake and negotiation at least once
    all_logged_in_s: float | None = None  # when the last device first logged in (from the start)
    acked_when_all_logged_in: int = 0
    acked_when_recording_stopped: int | None = None

    @property
    def steady_rate(self) -> float | None:
        """Acknowledged records per second from the moment every device was connected to the end of
        recording - the rate without the connection ramp (None when the ramp took the whole run)."""
        start = self.all_logged_in_s
        if start is None or self.acked_when_recording_stopped is None:
            return None
        window = self.config.duration if self.config.duration_from_login else self.config.duration - start
        if window < 1.0:
            return None
        return (self.acked_when_recording_stopped - self.acked_when_all_logged_in) / window

    @property
    def acked(self) -> dict[str, int]:
        """Return acknowledged records per IMEI (indexes ``first_index`` .. ``first_index + n - 1``)."""
        return {imei: tally.acked for imei, tally in self.devices.items()}

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed_s or 1e-9
        return {
            "devices": self.config.devices,
            "flex": self.config.flex,
            "records_per_frame": self.config.records_per_frame,
            "target_rate": self.config.rate,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_sent": self.records_sent,
            "records_resent": self.records_resent,
            "records_acked": self.records_acked,
            "records_acked_per_s": round(self.records_acked / elapsed, 1),
            "steady_records_per_s": None if self.steady_rate is None else round(self.steady_rate, 1),
            "all_logged_in_s": None if self.all_logged_in_s is None else round(self.all_logged_in_s, 3),
            "frames_sent": self.frames_sent,
            "frames_acked": self.frames_acked,
            "retransmissions": self.retransmissions,
            "connections": self.connections,
            "connect_failures": self.connect_failures,
            "disconnects": self.disconnects,
            "ack_timeouts": self.ack_timeouts,
            "bad_replies": self.bad_replies,
            "ack_latency_ms": {
                "p50": self.percentile_ms(0.5),
                "p90": self.percentile_ms(0.9),
                "p99": self.percentile_ms(0.99),
                "max": self.percentile_ms(1.0),
            },
        }


class _Profile:
    """The negotiated layout and where the per-record values sit in an encoded record."""

    def __init__(self, flex: str) -> None:
        if flex not in FLEX_PROFILES:
            raise ValueError(f"unknown FLEX version {flex!r}; use one of {', '.join(FLEX_PROFILES)}")
        self.version, fields = FLEX_PROFILES[flex]
        self.layout: FlexLayout = layout_for_fields(fields)
        self.bit_count = FULL_MASK_BITS[self.version]
        self.negotiation_body_tail = bytes((0xB0, self.version, self.version))
        offsets: dict[int, int] = {}
        position = 0
        for number in self.layout.fields:
            offsets[number] = position
            position += field_spec(number, self.layout.field100_size).size
        self.offsets = offsets

    def negotiation(self) -> bytes:
        return flex_negotiation(self.layout.fields, version=self.version, bit_count=self.bit_count)

    def template(self, rng: random.Random, can: bool = False) -> tuple[bytearray, float, float]:
        lat = rng.uniform(45.0, 60.0)
        lon = rng.uniform(25.0, 60.0)
        record = build_record(
            self.layout,
            index=0,
            event_code=PERIODIC_EVENT,
            device_time=EPOCH_BASE,
            fix_time=EPOCH_BASE,
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


_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


class _Device:
    """One simulated tracker: a black box (a counter) and its upload loop."""

    def __init__(self, sim: _Simulation, number: int) -> None:
        self.sim = sim
        config = sim.config
        self.imei = f"{config.first_imei + number:015d}"
        self.tally = DeviceTally(self.imei)
        sim.result.devices[self.imei] = self.tally
        self.rng = random.Random((config.seed or 0) * 1_000_003 + number)
        self.template, self.lat, self.lon = sim.profile.template(self.rng, config.can)
        self.next_index = config.first_index  # next record to record
        self.pending: tuple[bytes, int] | None = None  # frame waiting for its ACK: (bytes, record count)
        self.sent_once = False
        self.logged_in_once = False
        per_device = config.rate / config.devices if config.rate > 0 else 0.0
        self.interval = 1.0 / per_device if per_device > 0 else 0.0
        # Spread the devices' recording phases so their frames do not arrive in lockstep.
        self.phase = self.rng.random() * (self.interval * config.records_per_frame if self.interval else 0)

    def _record(self, index: int) -> bytes:
        profile = self.sim.profile
        offsets = profile.offsets
        record = self.template
        seconds = EPOCH_BASE + index
        _U32.pack_into(record, offsets[1], index)
        _U32.pack_into(record, offsets[3], seconds)
        if 9 in offsets:
            _U32.pack_into(record, offsets[9], seconds)
        if 10 in offsets:
            drift = (index % 3600) * 1e-5
            _I32.pack_into(record, offsets[10], round((self.lat + drift) * 600000))
            _I32.pack_into(record, offsets[11], round((self.lon + drift) * 600000))
        return bytes(record)

    def _available(self, now: float) -> int:
        """Records recorded so far and not yet put into a frame."""
        config = self.sim.config
        if not self.interval:
            return config.records_per_frame
        recorded_until = min(now, self.sim.stop_recording_at) - self.sim.started - self.phase
        total = max(0, math.floor(recorded_until / self.interval))
        return total - (self.next_index - config.first_index)

    def _next_frame(self, now: float) -> tuple[bytes, int] | None:
        config = self.sim.config
        available = self._available(now)
        if available <= 0:
            return None
        if available < config.records_per_frame and now < self.sim.stop_recording_at:
            return None  # a tracker collects a full frame while it is recording
        count = min(available, config.records_per_frame)
        records = [self._record(self.next_index + i) for i in range(count)]
        self.next_index += count
        self.tally.generated += count
        return archive(records), count

    async def run(self) -> None:
        sim = self.sim
        config = sim.config
        delay = RECONNECT_MIN_SEC
        while True:
            if sim.finished(self):
                return
            try:
                async with sim.connect_slots:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(config.host, config.port), config.connect_timeout
                    )
            except (OSError, TimeoutError):
                sim.result.connect_failures += 1
                await asyncio.sleep(delay * (0.5 + self.rng.random()))
                delay = min(delay * 2, RECONNECT_MAX_SEC)
                continue
            sim.result.connections += 1
            try:
                await self._session(reader, writer)
                delay = RECONNECT_MIN_SEC
            except (OSError, asyncio.IncompleteReadError, ConnectionError, TimeoutError, _BadReply) as err:
                if isinstance(err, TimeoutError):
                    sim.result.ack_timeouts += 1
                elif isinstance(err, _BadReply):
                    sim.result.bad_replies += 1
                else:
                    sim.result.disconnects += 1
                await asyncio.sleep(delay * (0.5 + self.rng.random()))
                delay = min(delay * 2, RECONNECT_MAX_SEC)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sim = self.sim
        config = sim.config
        result = sim.result
        timeout = config.ack_timeout
        writer.write(handshake(self.imei))
        body = await asyncio.wait_for(_read_ntcb(reader), timeout)
        if body != b"*<S":
            raise _BadReply(f"handshake answered {body!r}")
        writer.write(sim.profile.negotiation())
        body = await asyncio.wait_for(_read_ntcb(reader), timeout)
        if body != b"*<FLEX" + sim.profile.negotiation_body_tail:
            raise _BadReply(f"negotiation answered {body!r}")
        loop = asyncio.get_running_loop()
        if not self.logged_in_once:
            self.logged_in_once = True
            sim.device_logged_in()
        while True:
            if self.pending is None:
                now = loop.time()
                if sim.finished(self):
                    return
                frame = self._next_frame(now)
                if frame is None:
                    await asyncio.sleep(self._wait_for_records(now))
                    continue
                self.pending = frame
                self.sent_once = False
            data, count = self.pending
            writer.write(data)
            sent_at = loop.time()
            result.frames_sent += 1
            if self.sent_once:
                result.retransmissions += 1
                result.records_resent += count
            else:
                result.records_sent += count
                self.sent_once = True
            ack = await asyncio.wait_for(reader.readexactly(4), timeout)
            if ack != ack_archive(count):
                raise _BadReply(f"expected ACK {ack_archive(count).hex()}, got {ack.hex()}")
            result.latencies.append(loop.time() - sent_at)
            result.frames_acked += 1
            result.records_acked += count
            self.tally.acked += count
            self.pending = None

    def _wait_for_records(self, now: float) -> float:
        config = self.sim.config
        if not self.interval:
            return 0.001
        missing = config.records_per_frame - max(0, self._available(now))
        return max(0.001, min(missing * self.interval, self.sim.stop_recording_at - now + 0.001))


class _BadReply(Exception):
    """The server answered something a device would not accept."""


async def _read_ntcb(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(NTCB_HEADER)
    if header[:4] != b"@NTC":
        raise _BadReply(f"not an NTCB reply: {header.hex()}")
    length = header[12] | header[13] << 8
    return await reader.readexactly(length)


class _Simulation:
    def __init__(self, config: SimulationConfig) -> None:
        if config.devices < 1 or not 1 <= config.records_per_frame <= 255:
            raise ValueError("need at least one device and 1..255 records per frame")
        self.config = config
        self.profile = _Profile(config.flex)
        self.result = SimulationResult(config)
        self.connect_slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        self.stop_recording_at = self.started + config.duration
        self.give_up_at = self.stop_recording_at + config.drain_timeout
        if config.duration_from_login:  # until everyone is in, recording does not stop
            self.stop_recording_at = self.give_up_at = float("inf")
        self._loop = loop
        self.stop_marker: asyncio.TimerHandle | asyncio.Handle = loop.call_soon(lambda: None)

    def device_logged_in(self) -> None:
        result = self.result
        result.logged_in += 1
        if result.logged_in == self.config.devices:
            now = self._loop.time()
            result.all_logged_in_s = now - self.started
            result.acked_when_all_logged_in = result.records_acked
            if self.config.duration_from_login:
                self.stop_recording_at = now + self.config.duration
                self.give_up_at = self.stop_recording_at + self.config.drain_timeout
                self.stop_marker.cancel()
                self.stop_marker = self._loop.call_at(self.stop_recording_at, self.recording_stopped)

    def recording_stopped(self) -> None:
        self.result.acked_when_recording_stopped = self.result.records_acked

    def finished(self, device: _Device) -> bool:
        now = self._loop.time()
        if now >= self.give_up_at:
            return True
        if now < self.stop_recording_at or device.pending is not None:
            return False
        # Recording is over: done once the black box holds nothing unsent that we are asked to deliver.
        if not self.config.deliver_backlog:
            return True
        return device._available(now) <= 0


async def run_simulation(
    config: SimulationConfig, on_progress: Callable[[SimulationResult, float], None] | None = None
) -> SimulationResult:
    """Run the simulated devices until ``duration`` is over and their in-flight frames are settled."""
    sim = _Simulation(config)
    devices = [_Device(sim, number) for number in range(config.devices)]
    tasks = [asyncio.create_task(device.run(), name=f"sim-{device.imei}") for device in devices]
    sim.stop_marker = asyncio.get_running_loop().call_at(sim.stop_recording_at, sim.recording_stopped)
    monitor: asyncio.Task[None] | None = None
    if on_progress is not None:
        monitor = asyncio.create_task(_monitor(sim, on_progress))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sim.stop_marker.cancel()
        if monitor is not None:
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)
    sim.result.elapsed_s = asyncio.get_running_loop().time() - sim.started
    return sim.result


async def _monitor(sim: _Simulation, on_progress: Callable[[SimulationResult, float], None]) -> None:
    while True:
        elapsed = asyncio.get_running_loop().time() - sim.started
        on_progress(sim.result, elapsed)
        await asyncio.sleep(0.5)


def run_simulation_blocking(config: SimulationConfig) -> dict[str, Any]:
    """Run a simulation on a fresh (uv)loop and return its summary plus acknowledged counts per IMEI.

    Used by the benchmark to drive load from a separate process.
    """
    started = time.perf_counter()
    result = _run_fresh_loop(run_simulation(config))
    summary = result.summary()
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
    summary["acked"] = result.acked
    return summary


def _run_fresh_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
