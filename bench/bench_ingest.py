#!/usr/bin/env python3
"""End-to-end ingest benchmark: records per second durably stored *and* acknowledged.

    make bench-ingest          # or: .venv/bin/python bench/bench_ingest.py [--duration 20] [--output FILE]

A real `fleet serve --role ingest` process (uvloop) is loaded by the simulator (`fleet.simulate`) in a
separate process, so that server and client each get a core; PostgreSQL is a fresh embedded server (or
DATABASE_URL). Scenarios, FLEX 2.0 with 10 records per ``~A`` unless named otherwise:

* ``max_1000`` / ``max_10000`` - 1,000 / 10,000 connections, every device sends its next frame as soon as
  the previous one is acknowledged: the maximum rate, with ACK latency.
* ``half_rate_1000`` - 1,000 connections paced at half the best maximum: the ACK latency at that load.
* ``max_1000_can`` - as ``max_1000`` with CAN values in every record (one more `can_data` row each).
* ``teltonika_max_1000`` - 1,000 Teltonika connections (port TELTONIKA_PORT), Codec 8E, 10 records per
  AVL packet with a typical FMB IO set (12 elements), at the maximum rate.
* ``idle_rss`` - a fresh server, 10,000 connections that log in and stay idle: RSS per idle connection.
* ``raw_copy`` - the baseline: binary COPY of the same position rows straight into ``positions`` (as the
  owner, in 5,000-row transactions like the writer's batches), no network, no decoding.

CPU time of the server, PostgreSQL and the simulator is read from /proc for each scenario, so the cost per
record is visible even when the machine is shared. The result is one JSON document (stdout and --output)
with the machine's description, including its load when the run started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.simulate.engine import SimulationConfig, run_simulation_blocking  # noqa: E402

CONNECTIONS_SMALL = 1_000
CONNECTIONS_LARGE = 10_000
RECORDS_PER_FRAME = 10
BASELINE_ROWS = 200_000
BASELINE_BATCH = 5_000


# --- machine ------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    versions = {}
    for module in ("uvloop", "asyncpg", "orjson"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return {
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "loadavg_at_start": os.getloadavg(),
        "busy_processes_at_start": busy_processes(),
    }


def busy_processes(limit: int = 5) -> list[str]:
    """Other processes using CPU when the run starts (a shared machine skews every figure)."""
    first = _ticks_by_pid()
    time.sleep(1.0)
    second = _ticks_by_pid()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (ticks, command) in second.items():
        used = (ticks - first.get(pid, (ticks, ""))[0]) / hz
        if used > 0.05 and pid != os.getpid():
            busy.append((used, f"{used * 100:.0f}% {command[:80]}"))
    return [text for _, text in sorted(busy, reverse=True)[:limit]]


def _ticks_by_pid() -> dict[int, tuple[int, str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry)] = (int(fields[11]) + int(fields[12]), command.strip())
    return out


def postgres_pids(postmaster: int) -> set[int]:
    """The postmaster and its children (other clusters on a shared machine are not ours)."""
    pids = {postmaster}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                    if line.startswith("PPid:") and int(line.split()[1]) == postmaster:
                        pids.add(int(entry))
                        break
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU seconds of the server, our PostgreSQL cluster and the simulator between start() and stop().

    The simulator reports its own CPU time (it has exited when the meter stops).
    """

    postmaster: int | None = None

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.simulator_pid: int | None = None
        self.simulator_cpu_s = 0.0
        self._start: dict[int, tuple[int, str]] = {}

    def start(self) -> None:
        self._start = _ticks_by_pid()
        self._started = time.monotonic()

    def stop(self, records: int) -> dict[str, Any]:
        end = _ticks_by_pid()
        hz = os.sysconf("SC_CLK_TCK")
        seconds = time.monotonic() - self._started
        groups = {"server": 0.0, "postgres": 0.0, "simulator": self.simulator_cpu_s, "other": 0.0}
        ours = postgres_pids(self.postmaster) if self.postmaster else set()
        for pid, (ticks, _command) in end.items():
            used = (ticks - self._start.get(pid, (0, ""))[0]) / hz
            if pid == self.server_pid:
                groups["server"] += used
            elif pid in ours:
                groups["postgres"] += used
            elif pid not in (os.getpid(), self.simulator_pid):
                groups["other"] += used
        out: dict[str, Any] = {f"{k}_cores": round(v / seconds, 2) for k, v in groups.items()}
        if records:
            out.update(
                {f"{k}_us_per_record": round(v / records * 1e6, 1) for k, v in groups.items() if k != "other"}
            )
        return out


# --- processes ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Server:
    """`fleet serve --role ingest` in its own process; stopped by PID."""

    def __init__(self, owner_dsn: str, app_password: str, workdir: Path) -> None:
        self.port = free_port()
        self.teltonika_port = free_port()
        self.workdir = workdir
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DB_", "INGEST_", "SERVER_", "TELTONIKA_"))
        }
        self.env.update(
            DATABASE_URL=owner_dsn,
            DB_APP_PASSWORD=app_password,
            DB_GRAFANA_PASSWORD=secrets.token_urlsafe(16),
            DATA_DIR=str(workdir),
            SECRET_KEY=secrets.token_urlsafe(32),
            API_KEY=secrets.token_urlsafe(32),
            ENV="test",
            LOG_LEVEL="WARNING",
            LOG_FORMAT="json",
            SERVER_HOST="127.0.0.1",
            SERVER_PORT=str(self.port),
            TELTONIKA_PORT=str(self.teltonika_port),
        )
        self.env.pop("REDIS_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet", "serve", "--role", "ingest"],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "server.log").read_text()[-3000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.2)
                continue
            # Another process may have taken the free port meanwhile (parallel test runs on a shared
            # machine): then ours fails to bind and exits, and what answered was not our server.
            time.sleep(1.0)
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + (self.workdir / "server.log").read_text()[-3000:])
            return
        raise RuntimeError("server did not start listening")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def _simulate_child(config: dict[str, Any], pipe: Any) -> None:
    summary = run_simulation_blocking(SimulationConfig(**config))
    summary.pop("acked", None)
    pipe.send(summary)
    pipe.close()


def simulate(config: SimulationConfig, meter: CpuMeter | None = None) -> dict[str, Any]:
    """Run the simulator in its own process (its own core); return its summary."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_simulate_child, args=(config.__dict__, child), daemon=True)
    process.start()
    if meter is not None:
        meter.simulator_pid = process.pid
        meter.start()
    summary: dict[str, Any] = parent.recv()
    process.join(30)
    if meter is not None:
        meter.simulator_cpu_s = summary["cpu_s"]
    return summary


def _idle_child(port: int, count: int, first_imei: int, pipe: Any) -> None:
    import uvloop

    from fleet.protocol.navtelecom import flex_negotiation, handshake
    from fleet.protocol.navtelecom.layout import FULL_MASK_BITS
    from fleet.protocol.navtelecom.simulation import FLEX_PROFILES

    version, fields = FLEX_PROFILES["2.0"]
    negotiation = flex_negotiation(fields, version=version, bit_count=FULL_MASK_BITS[version])

    async def login(number: int, gate: asyncio.Semaphore) -> asyncio.StreamWriter:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(handshake(f"{first_imei + number:015d}"))
            header = await reader.readexactly(16)
            await reader.readexactly(header[12] | header[13] << 8)
            writer.write(negotiation)
            header = await reader.readexactly(16)
            await reader.readexactly(header[12] | header[13] << 8)
            return writer

    async def main() -> None:
        gate = asyncio.Semaphore(200)
        try:
            writers = await asyncio.gather(*(login(n, gate) for n in range(count)))
        except (OSError, asyncio.IncompleteReadError) as err:
            pipe.send(f"idle logins failed: {err!r}")  # the parent must not wait forever
            raise
        pipe.send(len(writers))
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        for writer in writers:
            writer.close()

    uvloop.run(main())


# --- baseline -----------------------------------------------------------------------------------------------------


async def raw_copy_baseline(owner_dsn: str, rows: int) -> dict[str, Any]:
    """Binary COPY of FLEX 2.0 position rows (decoded by the same code) straight into `positions`."""
    import random
    import struct

    import asyncpg

    from fleet.db.queries.ingest import POSITION_COLUMNS
    from fleet.protocol.navtelecom import NavtelecomSession, RowBuilder, Telemetry, archive, handshake
    from fleet.protocol.navtelecom.simulation import profile as flex_profile

    epoch_base = 1_735_689_600  # record times of the baseline rows (2025-01-01)
    profile = flex_profile("2.0")
    template, _, _ = profile.template(random.Random(1), False)
    session = NavtelecomSession()
    session.feed(handshake("100000000000001"))
    session.feed(profile.negotiation)
    builder = RowBuilder()
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda text: b"\x01" + text.encode(),
            decoder=bytes,
            schema="pg_catalog",
            format="binary",
        )
        devices = await conn.fetch(
            "INSERT INTO devices (imei) SELECT 'baseline' || g || $1 FROM generate_series(1, 100) g RETURNING id",
            secrets.token_hex(4),
        )
        now = datetime.now(UTC)
        staged: list[tuple[Any, ...]] = []
        for number in range(rows // RECORDS_PER_FRAME):
            records = []
            for i in range(RECORDS_PER_FRAME):
                record = bytearray(template)
                index = number * RECORDS_PER_FRAME + i + 1
                struct.pack_into("<I", record, profile.offsets[1], index)
                struct.pack_into("<I", record, profile.offsets[3], epoch_base + index)
                struct.pack_into("<I", record, profile.offsets[9], epoch_base)  # a fix time, as before
                records.append(bytes(record))
            (telemetry,) = session.feed(archive(records))
            assert isinstance(telemetry, Telemetry)
            for row in builder.telemetry(devices[number % len(devices)]["id"], telemetry, now).positions:
                # The writer stages epoch seconds; positions itself takes timestamptz.
                times = (datetime.fromtimestamp(row[3], UTC), datetime.fromtimestamp(row[4], UTC))
                staged.append((*row[:3], *times, *row[5:]))
        started = time.perf_counter()
        for first in range(0, len(staged), BASELINE_BATCH):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "positions",
                    records=staged[first : first + BASELINE_BATCH],
                    columns=list(POSITION_COLUMNS),
                )
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return {"rows": len(staged), "seconds": round(seconds, 3), "rows_per_s": round(len(staged) / seconds, 1)}


# --- scenarios ----------------------------------------------------------------------------------------------------


def load_scenario(
    server: Server,
    name: str,
    devices: int,
    rate: float,
    duration: float,
    first_imei: int,
    can: bool = False,
    protocol: str = "navtelecom",
) -> dict[str, Any]:
    meter = CpuMeter(server.pid)
    options: dict[str, Any] = (
        {"flex": "2.0", "can": can} if protocol == "navtelecom" else {"codec": "8E", "can": can}
    )
    config = SimulationConfig(
        port=server.port if protocol == "navtelecom" else server.teltonika_port,
        protocol=protocol,
        options=options,
        devices=devices,
        rate=rate,
        duration=duration,
        records_per_frame=RECORDS_PER_FRAME,
        ack_timeout=30.0,
        drain_timeout=30.0,
        first_imei=first_imei,
        duration_from_login=True,
    )
    summary = simulate(config, meter)
    cpu = meter.stop(summary["records_acked"])
    result = {
        "scenario": name,
        "protocol": protocol,
        "connections": devices,
        "target_rate": rate,
        "can": can,
        "records_acked": summary["records_acked"],
        # Steady state: from the moment every device was logged in to the end of the load.
        "records_per_s": summary["steady_records_per_s"],
        "records_per_s_including_ramp": summary["records_acked_per_s"],
        "all_logged_in_s": summary["all_logged_in_s"],
        "elapsed_s": summary["elapsed_s"],
        "ack_latency_ms": summary["ack_latency_ms"],
        "retransmissions": summary["retransmissions"],
        "disconnects": summary["disconnects"],
        "connect_failures": summary["connect_failures"],
        "server_rss_mib": round(rss_bytes(server.pid) / 2**20, 1),
        "cpu": cpu,
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def idle_scenario(server: Server, count: int, first_imei: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    before = rss_bytes(server.pid)
    process = context.Process(target=_idle_child, args=(server.port, count, first_imei, child), daemon=True)
    process.start()
    opened = parent.recv()
    if isinstance(opened, str):
        raise RuntimeError(opened)
    time.sleep(3.0)  # let the connections' first batch commit and the allocator settle
    after = rss_bytes(server.pid)
    parent.send("release")
    process.join(60)
    result = {
        "scenario": "idle_rss",
        "connections": opened,
        "server_rss_before_mib": round(before / 2**20, 1),
        "server_rss_after_mib": round(after / 2**20, 1),
        "rss_per_idle_connection_kib": round((after - before) / opened / 1024, 2),
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


async def count_positions(owner_dsn: str, first_imei: int, devices: int) -> int:
    import asyncpg

    conn = await asyncpg.connect(owner_dsn)
    try:
        return int(
            await conn.fetchval(
                """SELECT count(*) FROM positions p JOIN devices d ON d.id = p.device_id
                   WHERE d.imei BETWEEN $1 AND $2""",
                f"{first_imei:015d}",
                f"{first_imei + devices - 1:015d}",
            )
        )
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load scenario")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10,000 connections need file descriptors
    if hard < CONNECTIONS_LARGE + 1000:
        print(
            f"warning: RLIMIT_NOFILE hard limit {hard} is low for {CONNECTIONS_LARGE} connections",
            file=sys.stderr,
        )

    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-ingest-"))
    embedded = None
    owner_dsn = args.database_url
    if owner_dsn is None:
        from fleet.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(workdir / "pg")
        owner_dsn = embedded.start()
    app_password = secrets.token_urlsafe(24)
    results: dict[str, Any] = {
        "benchmark": "ingest",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "parameters": {
            "flex": "2.0",
            "teltonika_codec": "8E",
            "records_per_frame": RECORDS_PER_FRAME,
            "duration_s": args.duration,
            "database": "embedded" if embedded else "DATABASE_URL",
        },
    }
    servers: list[Server] = []
    try:
        migrate = subprocess.run(
            [sys.executable, "-m", "fleet", "db", "upgrade"],
            env={
                **os.environ,
                "DATABASE_URL": owner_dsn,
                "DB_APP_PASSWORD": app_password,
                "DATA_DIR": str(workdir),
            },
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(migrate.stderr)
        results["postgres_version"], CpuMeter.postmaster = asyncio.run(_server_version(owner_dsn))

        baseline = asyncio.run(raw_copy_baseline(owner_dsn, BASELINE_ROWS))
        results["raw_copy"] = baseline
        print(json.dumps({"scenario": "raw_copy", **baseline}), file=sys.stderr, flush=True)

        server = Server(owner_dsn, app_password, workdir)
        servers.append(server)
        server.start()
        load_scenario(server, "warmup", 100, 0.0, 3.0, 861_000_000_000_000)
        scenarios = []
        base = 862_000_000_000_000
        scenarios.append(load_scenario(server, "max_1000", CONNECTIONS_SMALL, 0.0, args.duration, base))
        scenarios.append(
            load_scenario(server, "max_10000", CONNECTIONS_LARGE, 0.0, args.duration, base + 100_000)
        )
        best = max(s["records_per_s"] or 0.0 for s in scenarios)
        scenarios.append(
            load_scenario(
                server, "half_rate_1000", CONNECTIONS_SMALL, best / 2, args.duration, base + 200_000
            )
        )
        scenarios.append(
            load_scenario(
                server, "max_1000_can", CONNECTIONS_SMALL, 0.0, args.duration, base + 300_000, can=True
            )
        )
        scenarios.append(
            load_scenario(
                server,
                "teltonika_max_1000",
                CONNECTIONS_SMALL,
                0.0,
                args.duration,
                base + 500_000,
                protocol="teltonika",
            )
        )
        stored = asyncio.run(count_positions(owner_dsn, base, CONNECTIONS_SMALL))
        results["durability_check"] = {
            "scenario": "max_1000",
            "records_acked": scenarios[0]["records_acked"],
            "positions_in_database": stored,
            "ok": stored >= scenarios[0]["records_acked"],
        }
        server.stop()

        idle_server = Server(owner_dsn, app_password, workdir)
        servers.append(idle_server)
        idle_server.start()
        scenarios.append(idle_scenario(idle_server, CONNECTIONS_LARGE, base + 400_000))
        idle_server.stop()

        results["scenarios"] = scenarios
        half = next(s for s in scenarios if s["scenario"] == "half_rate_1000")
        results["summary"] = {
            "max_records_per_s": best,
            "max_records_per_s_1000": scenarios[0]["records_per_s"],
            "max_records_per_s_10000": scenarios[1]["records_per_s"],
            "teltonika_max_records_per_s_1000": next(
                s["records_per_s"] for s in scenarios if s["scenario"] == "teltonika_max_1000"
            ),
            "raw_copy_rows_per_s": baseline["rows_per_s"],
            "ratio_to_raw_copy": round(best / baseline["rows_per_s"], 3) if best else None,
            "half_rate_records_per_s": half["records_per_s"],
            "half_rate_ack_p50_ms": half["ack_latency_ms"]["p50"],
            "half_rate_ack_p99_ms": half["ack_latency_ms"]["p99"],
            "rss_per_idle_connection_kib": scenarios[-1]["rss_per_idle_connection_kib"],
            "targets": {
                "records_per_s": 50_000,
                "ratio_to_raw_copy": 0.5,
                "half_rate_ack_p99_ms": 250,
                "rss_per_idle_connection_kib": 20,
            },
        }
    finally:
        for server in servers:
            server.stop()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    return 0


async def _server_version(dsn: str) -> tuple[str, int | None]:
    """Return the server version and its postmaster's PID (read while our backend is alive)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        version = str(await conn.fetchval("SHOW server_version"))
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        return version, await asyncio.to_thread(postmaster_of, backend)
    finally:
        await conn.close()


def postmaster_of(backend: int) -> int | None:
    """Return the postmaster of a backend PID (None when the server is not on this machine)."""
    try:
        for line in Path(f"/proc/{backend}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
