"""Fixtures of the ingest tests: in-process ingest services on free ports, a raw TCP tracker client,
unique IMEIs (the database is shared with every other test), and `fleet serve` as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fleet.config import Settings
from fleet.db import Database
from fleet.ingest import IngestService
from fleet.ops.bus import InProcessBus
from fleet.protocol.navtelecom import (
    ack_archive,
    archive,
    build_record,
    flex_negotiation,
    handshake,
    layout_for_fields,
)
from fleet.protocol.navtelecom.simulation import FLEX_PROFILES
from fleet.protocol.teltonika import CODEC_8E, avl_packet, encode_record, imei_packet

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "protocol" / "data" / "navtelecom_public.json"
# FLEX 2.0 field set of a real capture (70-byte records), used wherever a test needs ordinary records:
# the simulator's FLEX 2.0 profile, so the tests speak exactly what `fleet simulate` sends.
FLEX20_FIELDS = FLEX_PROFILES["2.0"][1]
LAYOUT = layout_for_fields(FLEX20_FIELDS)

_imeis = itertools.count(random.SystemRandom().randrange(10**11, 9 * 10**11))


def unique_imei() -> str:
    """Return an IMEI no other test uses (random base per run, then sequential)."""
    return f"35{next(_imeis):013d}"


def imei_block(count: int) -> int:
    """Reserve ``count`` consecutive unused IMEIs; return the first as an int (for the simulator)."""
    first = int(unique_imei())
    for _ in range(count - 1):
        unique_imei()
    return first


def negotiation_packet() -> bytes:
    return flex_negotiation(FLEX20_FIELDS, version=20, bit_count=122)


def record(index: int, *, time0: int = 1_767_225_600, lat: float = 55.75, lon: float = 37.61) -> bytes:
    """Encode one FLEX 2.0 record whose time is derived from its index (deterministic on resend)."""
    return build_record(
        LAYOUT,
        index=index,
        event_code=0x1250,
        device_time=time0 + index,
        fix_time=time0 + index,
        valid=True,
        satellites=9,
        latitude=lat + index * 1e-4,
        longitude=lon,
        altitude_m=150.0,
        speed_kmh=42.5,
        course=90,
        power_v=12.5,
        battery_v=4.1,
        hdop=0.9,
        pdop=1.2,
    )


def archive_frame(first: int, count: int, **kwargs: Any) -> bytes:
    return archive([record(first + i, **kwargs) for i in range(count)])


class Tracker:
    """A raw TCP client speaking bytes, with timeouts on every read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", source: str | None = None) -> Tracker:
        """Connect to ``host:port``, from the loopback address ``source`` (e.g. 127.0.0.2) when given."""
        local = (source, 0) if source else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=local), 5)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, size: int, within: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(size), within)

    async def read_ntcb(self, within: float = 5.0) -> bytes:
        """Return one whole NTCB packet."""
        header = await self.read(16, within)
        length = header[12] | header[13] << 8
        return header + await self.read(length, within)

    async def nothing_within(self, seconds: float) -> bool:
        """True when no byte arrives (and the connection stays open) for ``seconds``."""
        try:
            await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        return False

    async def closed_within(self, seconds: float) -> bool:
        """True when the server closes the connection within ``seconds`` (reading and dropping data)."""
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return False
                data = await asyncio.wait_for(self.reader.read(4096), remaining)
                if not data:
                    return True
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            return True

    async def login(self, imei: str) -> None:
        """Handshake and FLEX 2.0 negotiation, checking both answers."""
        await self.send(handshake(imei))
        assert (await self.read_ntcb())[16:] == b"*<S"
        await self.send(negotiation_packet())
        assert (await self.read_ntcb())[16:] == b"*<FLEX\xb0\x14\x14"

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@pytest.fixture
def ingest_settings(test_settings: Settings) -> Settings:
    return test_settings.model_copy(
        update={
            "server_host": "127.0.0.1",
            "ingest_bind_ephemeral": True,
            "ingest_batch_window_ms": 5.0,
            "ingest_handshake_timeout_sec": 30.0,
        }
    )


StartIngest = Callable[..., Awaitable[IngestService]]


@pytest.fixture
async def start_ingest(db: Database, ingest_settings: Settings) -> AsyncIterator[StartIngest]:
    """Start in-process ingest services (settings overridable per call); all are stopped afterwards."""
    services: list[IngestService] = []

    async def start(bus: Any = None, **overrides: Any) -> IngestService:
        settings = ingest_settings.model_copy(update=overrides)
        service = IngestService(settings, db, bus if bus is not None else InProcessBus())
        await service.start()
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop(grace=5)


async def positions_of(conn: asyncpg.Connection, imei: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT p.* FROM positions p JOIN devices d ON d.id = p.device_id
           WHERE d.imei = $1 ORDER BY p.record_index, p.device_time""",
        imei,
    )


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], within: float = 10.0, step: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


# --- `fleet serve --role ingest` as a real process ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`fleet serve --role ingest` against the test database, on its own port; stopped by PID."""

    def __init__(
        self,
        env: dict[str, str],
        port: int,
        log_path: Path,
        roles: tuple[str, ...] = ("ingest",),
        nofile: int | None = None,
    ) -> None:
        self.env = env
        self.port = port
        self.log_path = log_path
        self.roles = roles
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) of the server process
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0, ready_event: str | None = None) -> None:
        """Start and wait until the port answers - or, with ``ready_event``, until that event is logged
        (a process starting next to another one on the same port: a connection proves nothing)."""
        logged = len(self.log_events()) if ready_event and self.log_path.exists() else 0
        log = self.log_path.open("ab")
        command = [sys.executable, "-m", "fleet", "serve", *(a for r in self.roles for a in ("--role", r))]
        if self.nofile is not None:
            # Lower the descriptor limit (soft and hard) in a wrapper that then becomes the server.
            command = [
                sys.executable,
                "-c",
                "import os, resource, sys; "
                f"resource.setrlimit(resource.RLIMIT_NOFILE, ({self.nofile}, {self.nofile})); "
                "os.execv(sys.executable, sys.argv[1:])",
                *command,
            ]
        self.proc = subprocess.Popen(
            command,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.env["DATA_DIR"],
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            if ready_event is not None:
                if any(e.get("event") == ready_event for e in self.log_events()[logged:]):
                    return
                time.sleep(0.1)
                continue
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server did not listen in time:\n{self.log_path.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def kill(self) -> None:
        """SIGKILL: no graceful anything."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events


@pytest.fixture
def server_process(
    db: Database, test_settings: Settings, tmp_path: Path
) -> Iterator[Callable[..., ServerProcess]]:
    """Factory of `fleet serve --role ingest` subprocesses sharing the test database."""
    started: list[ServerProcess] = []

    def make(
        port: int | None = None,
        protocol: str = "navtelecom",
        roles: tuple[str, ...] = ("ingest",),
        nofile: int | None = None,
        **env_overrides: str,
    ) -> ServerProcess:
        assert db.owner_dsn is not None and test_settings.db_app_password is not None
        data_dir = tmp_path / f"server{len(started)}"
        data_dir.mkdir()
        port = port or free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DB_", "INGEST_", "SERVER_", "TELTONIKA_"))
        }
        env.update(
            {
                "DATABASE_URL": db.owner_dsn,
                "DB_APP_PASSWORD": test_settings.db_app_password.get_secret_value(),
                "DB_GRAFANA_PASSWORD": test_settings.db_grafana_password.get_secret_value()
                if test_settings.db_grafana_password
                else "grafana-test-password",
                "DB_MIGRATE_ON_START": "0",
                "DATA_DIR": str(data_dir),
                "SECRET_KEY": "ingest-test-secret-key-0123456789",
                "API_KEY": "ingest-test-api-key-0123456789",
                "ENV": "test",
                "LOG_FORMAT": "json",
                "SERVER_HOST": "127.0.0.1",
                # The protocol under test listens on `port`, the others are disabled.
                "SERVER_PORT": str(port) if protocol == "navtelecom" else "0",
                "TELTONIKA_PORT": str(port) if protocol == "teltonika" else "0",
                "INGEST_BATCH_WINDOW_MS": "5",
            }
        )
        env.pop("REDIS_URL", None)
        env.update(env_overrides)
        server = ServerProcess(env, port, data_dir / "server.log", roles, nofile)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# --- protocol drivers: protocol-independent tests run once per protocol ----------------------------------------


class _DriverBase:
    name = ""
    ack_size = 4

    def port(self, service: IngestService) -> int:
        return service.ports[self.name]

    def corrupt(self, frame: bytes) -> bytes:
        """The frame with a wrong checksum (same length)."""
        data = bytearray(frame)
        data[-1] ^= 0xFF
        return bytes(data)


class NavtelecomDriver(_DriverBase):
    """Navtelecom NTCB/FLEX as the protocol-independent tests need it."""

    name = "navtelecom"

    def login_bytes(self, imei: str) -> bytes:
        return handshake(imei)

    async def login(self, tracker: Tracker, imei: str) -> None:
        await tracker.login(imei)

    def frame(self, first: int, count: int) -> bytes:
        return archive_frame(first, count)

    def ack(self, count: int) -> bytes:
        return ack_archive(count)


class TeltonikaDriver(_DriverBase):
    """Teltonika Codec 8E as the protocol-independent tests need it."""

    name = "teltonika"

    def login_bytes(self, imei: str) -> bytes:
        return imei_packet(imei)

    async def login(self, tracker: Tracker, imei: str) -> None:
        await tracker.send(imei_packet(imei))
        assert await tracker.read(1) == b"\x01"

    def frame(self, first: int, count: int) -> bytes:
        return teltonika_frame(first, count)

    def ack(self, count: int) -> bytes:
        return count.to_bytes(4, "big")


def teltonika_record(index: int, *, time0: int = 1_767_225_600) -> bytes:
    """One Codec 8E record whose time and content derive from its index (deterministic on resend)."""
    return encode_record(
        CODEC_8E,
        timestamp_ms=(time0 + index) * 1000,
        latitude=55.75 + index * 1e-4,
        longitude=37.61,
        altitude=150,
        angle=90,
        satellites=9,
        speed=42,
        io=[(239, 1, 1), (66, 2, 12_500), (16, 4, index * 10)],
    )


def teltonika_frame(first: int, count: int) -> bytes:
    return avl_packet(CODEC_8E, [teltonika_record(first + i) for i in range(count)])


DRIVERS: dict[str, NavtelecomDriver | TeltonikaDriver] = {
    "navtelecom": NavtelecomDriver(),
    "teltonika": TeltonikaDriver(),
}
Driver = NavtelecomDriver | TeltonikaDriver


@pytest.fixture(params=sorted(DRIVERS))
def proto(request: pytest.FixtureRequest) -> Driver:
    """Each protocol in turn (for tests of protocol-independent behaviour)."""
    return DRIVERS[request.param]
