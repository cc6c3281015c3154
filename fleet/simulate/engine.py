"""The protocol-neutral simulator engine: tracker black boxes, uploads with ACKs, resends, reconnects.

Each simulated device records at its share of ``rate`` (records per second over all devices), connects,
logs in (its protocol's ``simulation.new_device(...).login``), uploads frames of up to
``records_per_frame`` records and waits for each acknowledgement before sending more. Only an
acknowledged frame leaves its black box. A device sends a frame once it holds ``records_per_frame``
records, or once its oldest unsent record has waited ``flush_sec`` (as trackers send on a period), so
every rate sends. Without an ACK within ``ack_timeout`` (or when the connection breaks) it reconnects and
sends the same frame again - reconnecting rather than resending on the same connection, because a late
ACK of the first copy would otherwise be taken for the ACK of the next frame (ACKs carry a count, not an
index).

Record times: the device clock starts at ``time_base`` (default: the wall clock when the run starts), and
record ``i`` is taken ``(i - first_index) * record_step`` seconds later, where the step is each device's
recording interval (``devices / rate``), or 10 ms at the maximum rate. Times derive from indexes, so a
resent frame is byte for byte the same.

``SimulationResult.acked`` tells, per IMEI, how many records (from index ``first_index`` on) were
acknowledged: exactly what a test must find in the database after a crash. When nothing was acknowledged,
``SimulationResult.diagnosis()`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import random
import resource
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

CONNECT_CONCURRENCY = 1000  # simultaneous connection attempts, to stay within the server's listen backlog
RECONNECT_MIN_SEC = 0.2
RECONNECT_MAX_SEC = 3.0
MAX_RATE_STEP_SEC = 0.01  # device-clock step between records at the maximum rate


class TrackerModel(Protocol):
    """What the engine needs from a protocol's simulated device (``<package>.simulation.new_device``)."""

    imei: str
    ack_size: int

    async def login(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, within: float
    ) -> None: ...

    def record(self, index: int, seconds: float) -> bytes: ...

    def frame(self, records: Sequence[bytes]) -> bytes: ...

    def ack(self, count: int) -> bytes: ...


def new_model(protocol: str, imei: str, rng: random.Random, options: dict[str, Any]) -> TrackerModel:
    """Return a simulated device of ``protocol`` (its package's ``simulation.new_device``)."""
    module = importlib.import_module(f"fleet.protocol.{protocol}.simulation")
    model: TrackerModel = module.new_device(imei, rng, **options)
    return model


@dataclass
class SimulationConfig:
    """What to simulate."""

    host: str = "127.0.0.1"
    port: int = 5221
    protocol: str = "navtelecom"
    options: dict[str, Any] = field(default_factory=dict)  # protocol-specific (flex, can, codec, ...)
    devices: int = 10
    rate: float = 100.0  # records per second over all devices; 0: as fast as ACKs allow
    duration: float = 10.0  # seconds of recording; then in-flight frames are finished
    records_per_frame: int = 10
    ack_timeout: float = 10.0
    drain_timeout: float = 30.0  # after `duration`, how long to keep trying to deliver what is recorded
    first_imei: int = 860000000000001
    first_index: int = 1
    connect_timeout: float = 10.0
    deliver_backlog: bool = False  # also upload records that could not be sent during `duration`
    flush_sec: float = 1.0  # a partial frame is sent once its oldest record waited this long
    time_base: float | None = None  # device clock at the start (epoch seconds); None: now
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
    records_recorded: int = 0
    last_error: str | None = None  # the last connection or reply problem, for diagnosis()

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

    def diagnosis(self) -> str | None:
        """Say why nothing was acknowledged (None when something was)."""
        config = self.config
        if self.records_acked:
            return None
        where = f"{config.host}:{config.port}"
        if self.connections == 0:
            reason = f" ({self.last_error})" if self.last_error else ""
            return f"no device could connect to {where}: {self.connect_failures} attempts failed{reason}"
        if self.logged_in == 0:
            return f"the server at {where} did not accept the login: {self.last_error or 'no answer'}"
        if self.records_recorded == 0:
            per_device = config.rate / config.devices if config.rate else 0.0
            return (
                f"no record was due within --duration {config.duration:g} s "
                f"(--rate {config.rate:g} over {config.devices} devices is one record every "
                f"{1 / per_device:.1f} s per device)"
            )
        if self.records_sent == 0:
            return "records were recorded but none could be sent (the connections kept failing)"
        return (
            f"{self.records_sent} records were sent but none acknowledged within --ack-timeout "
            f"{config.ack_timeout:g} s ({self.last_error or 'no answer'})"
        )

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed_s or 1e-9
        return {
            "devices": self.config.devices,
            "protocol": self.config.protocol,
            **self.config.options,
            "records_per_frame": self.config.records_per_frame,
            "target_rate": self.config.rate,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_recorded": self.records_recorded,
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


class _Device:
    """One simulated tracker: a black box (a counter) and its upload loop."""

    def __init__(self, sim: _Simulation, number: int) -> None:
        self.sim = sim
        config = sim.config
        self.imei = f"{config.first_imei + number:015d}"
        self.tally = DeviceTally(self.imei)
        sim.result.devices[self.imei] = self.tally
        self.rng = random.Random((config.seed or 0) * 1_000_003 + number)
        self.model = new_model(config.protocol, self.imei, self.rng, config.options)
        self.next_index = config.first_index  # next record to put into a frame
        self.pending: tuple[bytes, int] | None = None  # frame waiting for its ACK: (bytes, record count)
        self.sent_once = False
        self.logged_in_once = False
        per_device = config.rate / config.devices if config.rate > 0 else 0.0
        self.interval = 1.0 / per_device if per_device > 0 else 0.0
        self.step = self.interval or MAX_RATE_STEP_SEC  # device-clock time between records
        # Spread the devices' recording phases so their frames do not arrive in lockstep: over the time a
        # frame takes to fill, but never beyond one recording interval or the flush period (at low rates a
        # phase of many intervals would leave devices without a record for the whole run).
        spread = min(self.interval * config.records_per_frame, max(self.interval, config.flush_sec))
        self.phase = self.rng.random() * spread

    def _taken_at(self, index: int) -> float:
        """Loop time at which record ``index`` is recorded (the first one at the device's phase)."""
        return self.sim.started + self.phase + (index - self.sim.config.first_index) * self.interval

    def _available(self, now: float) -> int:
        """Records recorded so far and not yet put into a frame."""
        config = self.sim.config
        if not self.interval:
            return config.records_per_frame
        recorded_until = min(now, self.sim.stop_recording_at) - self.sim.started - self.phase
        total = math.floor(recorded_until / self.interval) + 1 if recorded_until >= 0 else 0
        return total - (self.next_index - config.first_index)

    def _next_frame(self, now: float) -> tuple[bytes, int] | None:
        config = self.sim.config
        available = self._available(now)
        if available <= 0:
            return None
        # A tracker collects a full frame while it is recording, but sends what it has once the oldest
        # record has waited flush_sec (and everything at the end).
        if (
            available < config.records_per_frame
            and now < self.sim.stop_recording_at
            and now - self._taken_at(self.next_index) < config.flush_sec
        ):
            return None
        count = min(available, config.records_per_frame)
        model = self.model
        base, first, step = self.sim.time_base, config.first_index, self.step
        records = [
            model.record(index, base + (index - first) * step)
            for index in range(self.next_index, self.next_index + count)
        ]
        self.next_index += count
        self.tally.generated += count
        self.sim.result.records_recorded += count
        return model.frame(records), count

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
            except (OSError, TimeoutError) as err:
                sim.result.connect_failures += 1
                sim.result.last_error = str(err) or type(err).__name__
                await asyncio.sleep(delay * (0.5 + self.rng.random()))
                delay = min(delay * 2, RECONNECT_MAX_SEC)
                continue
            sim.result.connections += 1
            try:
                await self._session(reader, writer)
                delay = RECONNECT_MIN_SEC
            except (OSError, asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError) as err:
                if isinstance(err, TimeoutError):
                    sim.result.ack_timeouts += 1
                    sim.result.last_error = "timed out waiting for an answer"
                elif isinstance(err, ValueError):
                    sim.result.bad_replies += 1
                    sim.result.last_error = str(err)
                else:
                    sim.result.disconnects += 1
                    sim.result.last_error = (
                        "the server closed the connection"
                        if isinstance(err, asyncio.IncompleteReadError)
                        else str(err) or type(err).__name__
                    )
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
        model = self.model
        await model.login(reader, writer, timeout)
        loop = asyncio.get_running_loop()
        if not self.logged_in_once:
            self.logged_in_once = True
            sim.device_logged_in()
        ack_size = model.ack_size
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
            # asyncio.timeout, not wait_for: wait_for wraps the read in a task of its own, once per frame.
            async with asyncio.timeout(timeout):
                ack = await reader.readexactly(ack_size)
            expected = model.ack(count)
            if ack != expected:
                raise ValueError(f"expected ACK {expected.hex()}, got {ack.hex()}")
            result.latencies.append(loop.time() - sent_at)
            result.frames_acked += 1
            result.records_acked += count
            self.tally.acked += count
            self.pending = None

    def _wait_for_records(self, now: float) -> float:
        """Sleep until a full frame is recorded or the oldest record is due (or recording stops)."""
        config = self.sim.config
        if not self.interval:
            return 0.001
        oldest = self._taken_at(self.next_index)
        full = self._taken_at(self.next_index + config.records_per_frame - 1)
        wake = min(full, oldest + config.flush_sec, self.sim.stop_recording_at + 0.001)
        return max(0.001, wake - now)


class _Simulation:
    def __init__(self, config: SimulationConfig) -> None:
        if config.devices < 1 or not 1 <= config.records_per_frame <= 255:
            raise ValueError("need at least one device and 1..255 records per frame")
        self.config = config
        self.result = SimulationResult(config)
        self.time_base = time.time() if config.time_base is None else config.time_base
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
