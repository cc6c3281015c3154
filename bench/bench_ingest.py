#!/usr/bin/env python3
"""End-to-end ingest benchmark: records per second durably stored *and* acknowledged, against raw COPY.

    make bench-ingest          # or: .venv/bin/python bench/bench_ingest.py [--runs 3] [--duration 20]
    .venv/bin/python bench/bench_ingest.py --quick     # smoke run (one short run, targets not enforced)

What it measures (issue 14): a real `fleet serve --role ingest` process (uvloop) loaded by the simulator
(`fleet.simulate`) in a separate process, against a fresh embedded PostgreSQL (or BENCH_DATABASE_URL).
The load: 1,000 FLEX 2.0 Navtelecom trackers with a 29-field mask (fields 1-20 and the nine CAN fields 53-57,
63-65, 69), 10 records per ``~A`` frame, one frame in flight per tracker (a tracker sends its next frame only
after the ACK of the previous one, as real devices do), a quarter of them reporting CAN values (the others
"not available"). Each run has:

* ``raw_copy`` - the baseline, the database's own rate: binary COPY of the same position rows straight into
  ``positions`` (as the owner, 5,000-row transactions), the COPY data encoded *before* the clock starts, so
  only PostgreSQL's work is timed;
* ``full`` - the 1,000 trackers as fast as ACKs allow;
* ``half`` - the 1,000 trackers paced at half of the full rate of the same run: the ACK latency at that load.

CPU time per record is read from /proc (utime + stime): the server process and its children ("server"),
our PostgreSQL cluster (postmaster and its children: backends, WAL writer, checkpointer), the simulator
(its own rusage). ``--runs`` runs (3 by default) give the spread (median, min, max); then 10,000 idle
connections on a fresh server give the RSS per idle connection (not in --quick). With ``--extra`` the older
scenarios run once after the runs: 10,000 connections, no CAN, Teltonika Codec 8E.

Results: ``bench/results/ingest-<UTC>.json`` and ``bench/results/ingest.json`` (bench.common.BenchReport);
``results.summary`` keeps the keys earlier versions had (``max_records_per_s``, ``ratio_to_raw_copy``,
``half_rate_ack_p99_ms``, ...), each the median over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BenchReport, add_quick_argument, spread, ticks_by_pid  # noqa: E402
from fleet.simulate.engine import SimulationConfig, run_simulation_blocking  # noqa: E402

CONNECTIONS_SMALL = 1_000
CONNECTIONS_LARGE = 10_000
RECORDS_PER_FRAME = 10
FLEX_PROFILE = "2.0-can"  # 29 fields: 1-20 and the CAN fields 53-57, 63-65, 69
CAN_SHARE = 0.25
BASELINE_ROWS = 200_000
BASELINE_BATCH = 5_000
TARGETS = {
    "ratio_to_raw_copy": 0.5,
    "postgres_us_per_record": 25.0,
    "server_us_per_record": 20.0,
    "half_rate_ack_p99_ms": 250.0,
}


# --- CPU from /proc ---------------------------------------------------------------------------------------


def descendants(root: int, table: dict[int, tuple[int, int, str]]) -> set[int]:
    pids = {root}
    grew = True
    while grew:
        grew = False
        for pid, (_ticks, parent, _command) in table.items():
            if parent in pids and pid not in pids:
                pids.add(pid)
                grew = True
    return pids


class CpuMeter:
    """CPU seconds of the server (and its children), our PostgreSQL cluster and the simulator.

    Processes that exit between start() and stop() (a PostgreSQL backend closed by the pool) are missed;
    the server keeps its pool open for the whole run. The simulator reports its own CPU time.
    """

    postmaster: int | None = None

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.simulator_pid: int | None = None
        self.simulator_cpu_s = 0.0
        self._start: dict[int, tuple[int, int, str]] = {}
        self._started = 0.0
        self.excluded: set[int] = set()  # PIDs not to count (the writer sampler's backend)

    def start(self) -> None:
        self._start = ticks_by_pid()
        self._started = time.monotonic()

    def stop(self, records: int) -> dict[str, Any]:
        end = ticks_by_pid()
        hz = os.sysconf("SC_CLK_TCK")
        seconds = time.monotonic() - self._started
        groups = {"server": 0.0, "postgres": 0.0, "simulator": self.simulator_cpu_s, "other": 0.0}
        server = descendants(self.server_pid, end) if self.server_pid else set()
        ours = descendants(self.postmaster, end) if self.postmaster else set()
        for pid, (ticks, _parent, _command) in end.items():
            used = (ticks - self._start.get(pid, (0, 0, ""))[0]) / hz
            if pid in self.excluded:
                continue
            if pid in server:
                groups["server"] += used
            elif pid in ours:
                groups["postgres"] += used
            elif pid not in (os.getpid(), self.simulator_pid):
                groups["other"] += used
        out: dict[str, Any] = {f"{k}_cores": round(v / seconds, 2) for k, v in groups.items()}
        out["seconds"] = round(seconds, 2)
        if records:
            out.update(
                {f"{k}_us_per_record": round(v / records * 1e6, 1) for k, v in groups.items() if k != "other"}
            )
        return out


class WriterSampler:
    """What the ingest writer's PostgreSQL connections are doing, sampled from `pg_stat_activity` (--sample-writers).

    A thread of this process polls every ``interval`` seconds over a connection of its own, whose backend the
    CPU meter leaves out. For the connections named ``fleet-ingest-writer`` it counts, per sample, how many
    are executing (active, no wait event), waiting for the server process (inside a transaction but idle, or
    in a COPY waiting for its data: `ClientRead`), waiting on WAL or data files, or idle between
    transactions; the result is the mean number of connections in each state over the load. The polling costs
    PostgreSQL and a core a little, so it is off by default and the headline runs go without it.
    """

    def __init__(self, owner_dsn: str, interval: float = 0.01) -> None:
        self.owner_dsn = owner_dsn
        self.interval = interval
        self.backend_pid: int | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples = 0
        self._states: dict[str, int] = {}
        self._waits: dict[str, int] = {}
        self._error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _run(self) -> None:
        import asyncpg

        try:
            conn = await asyncpg.connect(self.owner_dsn)
        except (OSError, asyncpg.PostgresError) as err:
            self._error = str(err)
            self._ready.set()
            return
        try:
            self.backend_pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
            self._ready.set()
            query = await conn.prepare(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                " WHERE application_name = 'fleet-ingest-writer'"
            )
            while not self._stop.is_set():
                rows = await query.fetch()
                self._samples += 1
                for row in rows:
                    state = _writer_state(row["state"], row["wait_event_type"], row["wait_event"])
                    self._states[state] = self._states.get(state, 0) + 1
                    if row["state"] == "active" and row["wait_event"]:
                        wait = f"{row['wait_event_type']}:{row['wait_event']}"
                        self._waits[wait] = self._waits.get(wait, 0) + 1
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._error is not None or not self._samples:
            return {"error": self._error or "no samples"}
        samples = self._samples
        return {
            "samples": samples,
            "interval_s": self.interval,
            "mean_connections": {k: round(v / samples, 2) for k, v in sorted(self._states.items())},
            "wait_events": {
                k: round(v / samples, 3) for k, v in sorted(self._waits.items(), key=lambda kv: -kv[1])[:8]
            },
        }


def _writer_state(state: str | None, wait_type: str | None, wait: str | None) -> str:
    if state == "idle in transaction":
        return "waiting_for_server"
    if state != "active":
        return "idle"
    if wait is None:
        return "executing"
    if wait == "ClientRead":
        return "waiting_for_server"
    if wait_type == "IO" or (wait and wait.startswith("WAL")):
        return "io"
    return "other_wait"


def cpu_budget(full: dict[str, Any], copy: dict[str, Any]) -> dict[str, Any]:
    """The ratio to COPY split into the CPU cost per record and how much of the machine the load kept busy.

    The COPY baseline is one backend on one core; the ingest path is three processes sharing every core. At
    full use of ``cores`` the rate could reach cores / (CPU per record), which against the COPY's rate gives
    the ratio the CPU cost alone allows (``ceiling_ratio_to_raw_copy``); the measured ratio is about that times
    the share of the cores the closed loop kept busy (``cores_used / cores``).
    """
    cpu = full.get("cpu", {})
    parts = [cpu.get(f"{group}_us_per_record") for group in ("server", "postgres", "simulator")]
    copy_row = copy.get("postgres_us_per_row")
    cores = os.cpu_count() or 1
    if None in parts or not copy_row or not copy.get("rows_per_s"):
        return {}
    total = sum(float(part) for part in parts if part is not None)
    ceiling = cores / total * 1e6
    used = sum(cpu.get(f"{group}_cores", 0.0) for group in ("server", "postgres", "simulator"))
    return {
        "cores": cores,
        "cores_used": round(used, 2),
        "us_per_record": round(total, 1),
        "in_copy_rows": round(total / copy_row, 2),
        "ceiling_records_per_s": round(ceiling),
        "ceiling_ratio_to_raw_copy": round(ceiling / copy["rows_per_s"], 3),
    }


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

    stop_timeout = 30.0

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
            # Every simulated tracker connects from 127.0.0.1: lift the per-address caps (1,000 connections,
            # 100 not yet identified) or the login ramp measures refusals and reconnections. Real trackers
            # come from many addresses.
            INGEST_MAX_CONNECTIONS_PER_ADDRESS="20000",
            INGEST_MAX_UNIDENTIFIED_PER_ADDRESS="20000",
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
                self.proc.wait(self.stop_timeout)
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


async def raw_copy_baseline(
    owner_dsn: str, rows: int, can: bool, batch: int = BASELINE_BATCH
) -> dict[str, Any]:
    """Binary COPY of FLEX position rows (decoded by the same code) straight into `positions`.

    The binary COPY data is encoded before the clock starts: the rows are staged once into a temp table and
    read back with ``COPY ... TO STDOUT (FORMAT binary)``, so the timed part is PostgreSQL receiving,
    checking, indexing and committing the rows - the database's own rate, which an ingest path that must
    decode, deduplicate, keep raw frames and acknowledge can approach but not pass.
    """
    import random
    import struct

    import asyncpg

    from fleet.db.queries.ingest import POSITION_COLUMNS
    from fleet.protocol.navtelecom import NavtelecomSession, RowBuilder, Telemetry, archive, handshake
    from fleet.protocol.navtelecom.simulation import profile as flex_profile

    epoch_base = int(time.time()) - 7_200  # record times of the baseline rows: this month, as the load's
    profile = flex_profile(FLEX_PROFILE)
    template, _, _ = profile.template(random.Random(1), can)
    session = NavtelecomSession()
    session.feed(handshake("100000000000001"))
    session.feed(profile.negotiation)
    builder = RowBuilder()
    conn = await asyncpg.connect(owner_dsn)
    try:
        devices = await conn.fetch(
            "INSERT INTO devices (imei) SELECT 'baseline' || g || $1 FROM generate_series(1, 100) g RETURNING id",
            secrets.token_hex(4),
        )
        staged: list[tuple[Any, ...]] = []
        for number in range(rows // RECORDS_PER_FRAME):
            records = []
            for i in range(RECORDS_PER_FRAME):
                record = bytearray(template)
                index = number * RECORDS_PER_FRAME + i + 1
                struct.pack_into("<I", record, profile.offsets[1], index)
                struct.pack_into("<I", record, profile.offsets[3], epoch_base + index // 100)
                struct.pack_into("<I", record, profile.offsets[9], epoch_base)
                records.append(bytes(record))
            (telemetry,) = session.feed(archive(records))
            assert isinstance(telemetry, Telemetry)
            staged.extend(
                builder.telemetry(
                    devices[number % len(devices)]["id"], telemetry, datetime.now(UTC)
                ).positions
            )
        columns = ", ".join(POSITION_COLUMNS)
        await conn.execute(
            "CREATE TEMP TABLE baseline_rows (device_id bigint, record_index bigint, event_code integer,"
            " device_time double precision, fix_time double precision, valid boolean,"
            " latitude double precision, longitude double precision, altitude double precision, speed real,"
            " course real, satellites smallint, hdop real, attributes text)"
        )
        await conn.copy_records_to_table("baseline_rows", records=staged, columns=list(POSITION_COLUMNS))
        chunks: list[bytes] = []
        select = (
            columns.replace("device_time", "to_timestamp(device_time)")
            .replace("fix_time", "to_timestamp(fix_time)")
            .replace("attributes", "attributes::jsonb")
        )
        for first in range(0, len(staged), batch):
            out = io.BytesIO()
            await conn.copy_from_query(
                f"SELECT {select} FROM baseline_rows ORDER BY ctid OFFSET {first} LIMIT {batch}",
                output=out,
                format="binary",
            )
            chunks.append(out.getvalue())
        await conn.execute("DROP TABLE baseline_rows")
        meter = CpuMeter(None)
        meter.start()
        started = time.perf_counter()
        for chunk in chunks:
            async with conn.transaction():
                await conn.copy_to_table(
                    "positions", source=io.BytesIO(chunk), columns=list(POSITION_COLUMNS), format="binary"
                )
        seconds = time.perf_counter() - started
        cpu = meter.stop(len(staged))
    finally:
        await conn.close()
    return {
        "rows": len(staged),
        "batch_rows": batch,
        "can_fields_with_values": can,
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(staged) / seconds, 1),
        "postgres_us_per_row": cpu.get("postgres_us_per_record"),
        "cpu": cpu,
    }


# --- scenarios ----------------------------------------------------------------------------------------------------


def load_scenario(
    server: Server,
    name: str,
    devices: int,
    rate: float,
    duration: float,
    first_imei: int,
    options: dict[str, Any] | None = None,
    protocol: str = "navtelecom",
    can: bool | None = None,
    sample_dsn: str | None = None,
) -> dict[str, Any]:
    """One load; ``options`` default to the issue-14 mix, ``can`` (earlier callers) means FLEX 2.0 with or
    without CAN values on every tracker; with ``sample_dsn`` the writer's connections are sampled
    (`WriterSampler`)."""
    meter = CpuMeter(server.pid)
    sampler = None
    if sample_dsn is not None:
        sampler = WriterSampler(sample_dsn)
        sampler.start()
        if sampler.backend_pid is not None:
            meter.excluded.add(sampler.backend_pid)
    if options is None:
        options = (
            {"flex": FLEX_PROFILE, "can_share": CAN_SHARE} if can is None else {"flex": "2.0", "can": can}
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
        seed=1,
    )
    load_before = os.getloadavg()[0]
    summary = simulate(config, meter)
    cpu = meter.stop(summary["records_acked"])
    writers = sampler.stop() if sampler is not None else None
    result = {
        "scenario": name,
        "protocol": protocol,
        "options": options,
        "connections": devices,
        "target_rate": round(rate, 1),
        "first_imei": first_imei,
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
        "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu": cpu,
    }
    if writers is not None:
        result["writer_connections"] = writers
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


def one_run(
    server: Server,
    owner_dsn: str,
    number: int,
    duration: float,
    devices: int,
    baseline_rows: int,
    profile: Path | None = None,
    sample_writers: bool = False,
) -> dict[str, Any]:
    """One run: the COPY baseline, the full load, then half of that load (fresh IMEIs each time)."""
    baseline = asyncio.run(raw_copy_baseline(owner_dsn, baseline_rows, can=False))
    print(json.dumps({"scenario": "raw_copy", "run": number, **baseline}), file=sys.stderr, flush=True)
    base = 862_000_000_000_000 + number * 1_000_000
    spy = None
    if profile is not None and number == 1:
        # A sampling profile of the server during the first full load (py-spy, from the dev extras).
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(server.pid),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(profile),
                "--duration",
                str(int(duration + 5)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    full = load_scenario(
        server, "full", devices, 0.0, duration, base, sample_dsn=owner_dsn if sample_writers else None
    )
    if spy is not None:
        spy.wait(60)
    half = load_scenario(
        server, "half", devices, (full["records_per_s"] or 0.0) / 2, duration, base + 100_000
    )
    stored = asyncio.run(count_positions(owner_dsn, base, devices))
    return {
        "run": number,
        "raw_copy": baseline,
        "full": full,
        "half": half,
        "durability_check": {
            "records_acked": full["records_acked"],
            "positions_in_database": stored,
            "ok": stored >= full["records_acked"],
        },
        "ratio_to_raw_copy": round((full["records_per_s"] or 0.0) / baseline["rows_per_s"], 3),
        "cpu_budget": cpu_budget(full, baseline),
    }


def extra_scenarios(
    server: Server, owner_dsn: str, app_password: str, workdir: Path, duration: float
) -> list[Any]:
    """The scenarios of earlier versions, once: 10,000 connections, no CAN, Teltonika."""
    base = 870_000_000_000_000
    out = [
        load_scenario(server, "max_10000", CONNECTIONS_LARGE, 0.0, duration, base),
        load_scenario(
            server,
            "max_1000_flex20_no_can",
            CONNECTIONS_SMALL,
            0.0,
            duration,
            base + 100_000,
            {"flex": "2.0"},
        ),
        load_scenario(
            server,
            "teltonika_max_1000",
            CONNECTIONS_SMALL,
            0.0,
            duration,
            base + 200_000,
            {"codec": "8E", "can": False},
            protocol="teltonika",
        ),
    ]
    return out


def idle_rss(owner_dsn: str, app_password: str, workdir: Path) -> dict[str, Any]:
    """RSS per idle connection: a fresh server, 10,000 trackers that log in and stay idle."""
    idle_server = Server(owner_dsn, app_password, workdir)
    try:
        idle_server.start()
        return idle_scenario(idle_server, CONNECTIONS_LARGE, 870_000_000_000_000 + 400_000)
    finally:
        idle_server.stop()


def compat_scenarios(runs: list[dict[str, Any]], extra: list[Any]) -> list[dict[str, Any]]:
    """The ``scenarios`` list of earlier versions (tools/capacity.py reads it): ``max_1000`` and
    ``half_rate_1000`` with the median over the runs of each figure, then the extra scenarios as measured."""
    out: list[dict[str, Any]] = []
    for name, key in (("max_1000", "full"), ("half_rate_1000", "half")):
        scenarios = [run[key] for run in runs]
        if not scenarios:
            continue

        def med(*path: str, scenarios: list[dict[str, Any]] = scenarios) -> float | None:
            values = []
            for scenario in scenarios:
                value: Any = scenario
                for part in path:
                    value = value.get(part) if isinstance(value, dict) else None
                values.append(value)
            return _median(values)

        out.append(
            {
                "scenario": name,
                "median_of_runs": len(scenarios),
                "connections": scenarios[0]["connections"],
                "options": scenarios[0]["options"],
                "records_per_s": med("records_per_s"),
                "ack_latency_ms": {p: med("ack_latency_ms", p) for p in ("p50", "p90", "p99", "max")},
                "cpu": {
                    f"{group}_us_per_record": med("cpu", f"{group}_us_per_record")
                    for group in ("server", "postgres", "simulator")
                },
            }
        )
    return out + list(extra)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return spread(present, 3)["median"] if present else None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=3, help="runs (each: COPY baseline, full load, half load)"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load scenario")
    parser.add_argument("--devices", type=int, default=CONNECTIONS_SMALL, help="simulated trackers")
    parser.add_argument("--extra", action="store_true", help="also 10,000 connections, no CAN, Teltonika")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server (e.g. INGEST_BATCH_MAX_RECORDS=1000); repeatable",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy profile (collapsed stacks) of the server in the first full load"
    )
    parser.add_argument(
        "--sample-writers",
        action="store_true",
        help="sample the writer's PostgreSQL connections every 10 ms during the full loads (costs a little)",
    )
    add_quick_argument(parser)
    args = parser.parse_args()
    baseline_rows = BASELINE_ROWS
    if args.quick:
        args.runs, args.duration, args.devices, args.extra = 1, 3.0, 200, False
        baseline_rows = 20_000

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10,000 connections need file descriptors

    report = BenchReport(
        "ingest",
        quick=args.quick,
        parameters={
            "protocol": "navtelecom",
            "flex": FLEX_PROFILE,
            "flex_fields": 29,
            "can_share": CAN_SHARE,
            "records_per_frame": RECORDS_PER_FRAME,
            "frames_in_flight_per_tracker": 1,
            "trackers": args.devices,
            "runs": args.runs,
            "duration_s": args.duration,
            "baseline": f"binary COPY into positions, {BASELINE_BATCH}-row transactions, encoded before timing",
            "baseline_rows": baseline_rows,
            "database": "DATABASE_URL" if args.database_url else "embedded",
            "synchronous_commit": "on",
            "server_env": args.server_env,
            "sample_writers": args.sample_writers,
        },
    )
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-ingest-"))
    embedded = None
    owner_dsn = args.database_url
    if owner_dsn is None:
        from fleet.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(workdir / "pg")
        owner_dsn = embedded.start()
    app_password = secrets.token_urlsafe(24)
    servers: list[Server] = []
    runs: list[dict[str, Any]] = []
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
        version, CpuMeter.postmaster = asyncio.run(_server_version(owner_dsn))
        report.set_postgres_version(version)

        server = Server(owner_dsn, app_password, workdir)
        server.env.update(dict(item.split("=", 1) for item in args.server_env))
        servers.append(server)
        server.start()
        load_scenario(server, "warmup", 100, 0.0, 1.5 if args.quick else 3.0, 861_000_000_000_000)
        for number in range(1, args.runs + 1):
            runs.append(
                one_run(
                    server,
                    owner_dsn,
                    number,
                    args.duration,
                    args.devices,
                    baseline_rows,
                    args.profile,
                    args.sample_writers,
                )
            )
        extra = extra_scenarios(server, owner_dsn, app_password, workdir, args.duration) if args.extra else []
        server.stop()
        if not args.quick:  # the capacity model (tools/capacity.py) reads it
            extra.append(idle_rss(owner_dsn, app_password, workdir))
    finally:
        for server in servers:
            server.stop()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def series(path: tuple[str, ...]) -> list[float]:
        values = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                values.append(float(value))
        return values

    keys = {
        "raw_copy_rows_per_s": ("raw_copy", "rows_per_s"),
        "raw_copy_postgres_us_per_row": ("raw_copy", "postgres_us_per_row"),
        "full_records_per_s": ("full", "records_per_s"),
        "ratio_to_raw_copy": ("ratio_to_raw_copy",),
        "full_server_us_per_record": ("full", "cpu", "server_us_per_record"),
        "full_postgres_us_per_record": ("full", "cpu", "postgres_us_per_record"),
        "full_simulator_us_per_record": ("full", "cpu", "simulator_us_per_record"),
        "full_other_cores": ("full", "cpu", "other_cores"),
        "full_ack_p50_ms": ("full", "ack_latency_ms", "p50"),
        "full_ack_p99_ms": ("full", "ack_latency_ms", "p99"),
        "half_records_per_s": ("half", "records_per_s"),
        "half_server_us_per_record": ("half", "cpu", "server_us_per_record"),
        "half_postgres_us_per_record": ("half", "cpu", "postgres_us_per_record"),
        "half_ack_p50_ms": ("half", "ack_latency_ms", "p50"),
        "half_ack_p99_ms": ("half", "ack_latency_ms", "p99"),
        "full_cores_used": ("cpu_budget", "cores_used"),
        "full_cpu_us_per_record": ("cpu_budget", "us_per_record"),
        "full_cpu_in_copy_rows": ("cpu_budget", "in_copy_rows"),
        "ceiling_ratio_to_raw_copy": ("cpu_budget", "ceiling_ratio_to_raw_copy"),
    }
    for key, path in keys.items():
        report.add_samples(key, series(path))
    copy_rate = _median(series(keys["raw_copy_rows_per_s"]))
    report.add_baseline("raw_copy_rows_per_s", copy_rate)
    report.add_baseline("raw_copy_postgres_us_per_row", _median(series(keys["raw_copy_postgres_us_per_row"])))
    full_rate = _median(series(keys["full_records_per_s"]))
    report.add_ratio("full_to_raw_copy", full_rate, copy_rate)
    # Targets hold in every run: the worst run is what is compared.
    ratios = series(keys["ratio_to_raw_copy"])
    pg = series(keys["full_postgres_us_per_record"])
    srv = series(keys["full_server_us_per_record"])
    p99 = series(keys["half_ack_p99_ms"])
    report.add_target(
        "ratio_to_raw_copy_worst_run", min(ratios) if ratios else None, TARGETS["ratio_to_raw_copy"]
    )
    report.add_target(
        "postgres_us_per_record_worst_run",
        max(pg) if pg else None,
        TARGETS["postgres_us_per_record"],
        higher_is_better=False,
        unit="us",
    )
    report.add_target(
        "server_us_per_record_worst_run",
        max(srv) if srv else None,
        TARGETS["server_us_per_record"],
        higher_is_better=False,
        unit="us",
    )
    report.add_target(
        "half_rate_ack_p99_ms_worst_run",
        max(p99) if p99 else None,
        TARGETS["half_rate_ack_p99_ms"],
        higher_is_better=False,
        unit="ms",
    )
    summary = {
        # The keys of earlier versions (medians over the runs).
        "max_records_per_s": full_rate,
        "max_records_per_s_1000": full_rate,
        "raw_copy_rows_per_s": copy_rate,
        "ratio_to_raw_copy": _median(ratios),
        "half_rate_records_per_s": _median(series(keys["half_records_per_s"])),
        "half_rate_ack_p50_ms": _median(series(keys["half_ack_p50_ms"])),
        "half_rate_ack_p99_ms": _median(p99),
        "server_us_per_record": _median(srv),
        "postgres_us_per_record": _median(pg),
        "raw_copy_postgres_us_per_row": _median(series(keys["raw_copy_postgres_us_per_row"])),
        "durability_ok": all(run["durability_check"]["ok"] for run in runs),
        "targets": TARGETS,
    }
    for item in extra if runs else []:
        name = item["scenario"]
        if name == "idle_rss":
            summary["rss_per_idle_connection_kib"] = item["rss_per_idle_connection_kib"]
        else:
            summary[f"{name}_records_per_s"] = item["records_per_s"]
    report.results = {
        "summary": summary,
        "runs": runs,
        "extra_scenarios": extra,
        "scenarios": compat_scenarios(runs, extra),
    }
    report.note(
        "CPU per record: utime+stime from /proc of the server process (and children) and of every process of "
        "the benchmark's own PostgreSQL cluster, divided by records acknowledged in the scenario."
    )
    report.write()
    print(json.dumps({"summary": summary, "targets": report.targets}, indent=2))
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
