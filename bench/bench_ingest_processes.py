#!/usr/bin/env python3
"""Ingest with 1, 2 and 4 processes sharing one device port (`fleet serve --workers N --role ingest`).

    make bench-ingest-processes     # or: .venv/bin/python bench/bench_ingest_processes.py [--quick]

For each process count a fresh supervisor starts N ingest processes on the same port (SO_REUSEPORT), and
the simulator (`fleet.simulate`, in its own process) drives 1,000 Navtelecom connections (FLEX 2.0, 10
records per frame) at the maximum rate: each device sends its next frame as soon as the previous one is
acknowledged. Measured per process count: records/s stored and acknowledged (steady state, from the
moment every device was logged in), the ACK latency percentiles, and the CPU time from /proc of the ingest
processes together ("server"), of our PostgreSQL cluster, and of the simulator - as cores and as
microseconds per record. ``records_per_server_core_s`` is the figure a capacity model scales by:
records one core of ingest processes stores per second (1e6 / cpu_us_per_record_server).

PostgreSQL is a fresh embedded server (or --database-url). The machine is shared and has few cores: the
load average before and after each run, and the busiest other processes at the start, are in the JSON.
Last, ``handover``: two plain ``fleet serve --role ingest`` processes on one port, new connections arriving
(each sends a handshake and waits for the answer) while the first process gets SIGTERM: how many attempts
were refused (none may be: the port always has a listener) and how many ended before their answer
(accepted or queued by the stopping process; ``net.ipv4.tcp_migrate_req`` is recorded with the machine).

Results (bench/common.py): bench/results/ingest_processes.json (``results.by_processes`` has records_per_s,
p99_ack_ms, cpu_us_per_record_server and cpu_us_per_record_postgres per process count) and a timestamped
copy; ``--quick`` (1 and 2 processes, 3 s each) writes ingest_processes-quick*.json instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import Server, descendants  # noqa: E402
from bench.common import BenchReport, add_quick_argument, ticks_by_pid  # noqa: E402
from fleet.simulate.engine import SimulationConfig, run_simulation_blocking  # noqa: E402

PROCESS_COUNTS = (1, 2, 4)
CONNECTIONS = 1_000
# What the trackers send (--can-share: the issue-14 mix of bench_ingest.py, FLEX 2.0 with the CAN fields).
LOAD_OPTIONS: dict[str, Any] = {"flex": "2.0"}
RECORDS_PER_FRAME = 10
# Settings given to every server of the run (--server-env), e.g. INGEST_DIRECT_COPY=false.
SERVER_ENV: dict[str, str] = {}


# --- the server -----------------------------------------------------------------------------------------------
class Supervised(Server):
    """`fleet serve --workers N --role ingest`, ready when the supervisor says so (FLEET_READY_FD)."""

    stop_timeout = 60.0  # the supervisor stops its children one after another

    def __init__(
        self, workers: int | None, owner_dsn: str, app_password: str, workdir: Path, port: int | None = None
    ) -> None:
        super().__init__(owner_dsn, app_password, workdir)
        self.workers = workers  # None: a plain `fleet serve --role ingest`, no supervisor
        if port is not None:
            self.port = port
        # Only the shared Navtelecom port; every simulated tracker comes from 127.0.0.1, where the per-address
        # caps (made for carrier NAT addresses) would refuse the login storm of 1,000 devices.
        self.env.update(
            SERVER_PORT=str(self.port),
            TELTONIKA_PORT="0",
            INGEST_MAX_CONNECTIONS_PER_ADDRESS="100000",
            INGEST_MAX_UNIDENTIFIED_PER_ADDRESS="100000",
        )
        self.env.update(SERVER_ENV)

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet",
                "serve",
                *(("--workers", str(self.workers)) if self.workers else ()),
                "--role",
                "ingest",
            ],
            env={**self.env, "FLEET_READY_FD": str(write_fd)},
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        log.close()
        try:
            ready, _, _ = select.select([read_fd], [], [], 120)
            line = os.read(read_fd, 64) if ready else b""
        finally:
            os.close(read_fd)
        if not line.startswith(b"ready"):
            self.stop()
            raise RuntimeError("supervisor not ready: " + (self.workdir / "server.log").read_text()[-3000:])


# --- load -------------------------------------------------------------------------------------------------------
def _simulate_child(config: dict[str, Any], pipe: Any) -> None:
    summary = run_simulation_blocking(SimulationConfig(**config))
    summary.pop("acked", None)
    pipe.send(summary)
    pipe.close()


def simulate(config: SimulationConfig) -> tuple[dict[str, Any], int]:
    """Run the simulator in its own process; return its summary and its pid."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_simulate_child, args=(config.__dict__, child), daemon=True)
    process.start()
    child.close()  # ours: recv() then sees EOF if the simulator dies instead of waiting for ever
    summary: dict[str, Any] = parent.recv()
    process.join(30)
    assert process.pid is not None
    return summary, process.pid


def run_count(
    workers: int,
    owner_dsn: str,
    app_password: str,
    workdir: Path,
    postmaster: int,
    duration: float,
    base: int,
    warmup_s: float = 2.0,
) -> dict[str, Any]:
    server = Supervised(workers, owner_dsn, app_password, workdir)
    load_before = os.getloadavg()
    server.start()
    try:
        warmup = SimulationConfig(
            port=server.port,
            devices=100,
            rate=0.0,
            duration=warmup_s,
            first_imei=base,
            duration_from_login=True,
        )
        simulate(warmup)
        config = SimulationConfig(
            port=server.port,
            protocol="navtelecom",
            options=dict(LOAD_OPTIONS),
            devices=CONNECTIONS,
            rate=0.0,
            duration=duration,
            records_per_frame=RECORDS_PER_FRAME,
            ack_timeout=30.0,
            drain_timeout=30.0,
            first_imei=base + 1000,
            duration_from_login=True,
        )
        start_table = ticks_by_pid()
        started = time.monotonic()
        summary, simulator_pid = simulate(config)
        seconds = time.monotonic() - started
        end_table = ticks_by_pid()
        server_pids = descendants(server.pid, end_table)
        pg_pids = descendants(postmaster, end_table)
        hz = os.sysconf("SC_CLK_TCK")
        groups = {"server": 0.0, "postgres": 0.0, "other": 0.0}
        for pid, (ticks, _parent, _command) in end_table.items():
            used = (ticks - start_table.get(pid, (0, 0, ""))[0]) / hz
            if pid in server_pids:
                groups["server"] += used
            elif pid in pg_pids:
                groups["postgres"] += used
            elif pid not in (os.getpid(), simulator_pid):
                groups["other"] += used
        groups["simulator"] = summary["cpu_s"]
        records = summary["records_acked"]
        per_record = {
            f"cpu_us_per_record_{k}": round(v / records * 1e6, 1) for k, v in groups.items() if records
        }
        rate = summary["steady_records_per_s"]
        server_us = per_record.get("cpu_us_per_record_server")
        result = {
            "ingest_processes": workers,
            "connections": CONNECTIONS,
            "records_acked": records,
            "records_per_s": rate,
            "records_per_s_including_ramp": summary["records_acked_per_s"],
            "p50_ack_ms": summary["ack_latency_ms"]["p50"],
            "p99_ack_ms": summary["ack_latency_ms"]["p99"],
            "ack_latency_ms": summary["ack_latency_ms"],
            "cores": {k: round(v / seconds, 2) for k, v in groups.items()},
            **per_record,
            # One core of ingest processes / of PostgreSQL, fully busy, at this cost per record:
            "records_per_server_core_s": round(1e6 / server_us) if server_us else None,
            "records_per_postgres_core_s": round(1e6 / per_record["cpu_us_per_record_postgres"])
            if per_record.get("cpu_us_per_record_postgres")
            else None,
            "retransmissions": summary["retransmissions"],
            "disconnects": summary["disconnects"],
            "connect_failures": summary["connect_failures"],
            "elapsed_s": round(seconds, 1),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        }
    finally:
        server.stop()
    print(json.dumps({k: v for k, v in result.items() if k != "ack_latency_ms"}), file=sys.stderr, flush=True)
    return result


# --- handover: connection attempts while one of two processes on the port stops ---------------------------
async def _connect_storm(port: int, seconds: float, rate: float, stop: Any) -> dict[str, Any]:
    """Open ``rate`` connections a second for ``seconds``, each sending a Navtelecom handshake and
    waiting for the answer; call ``stop()`` halfway. Count how each attempt ended."""
    from collections import Counter

    from fleet.protocol.navtelecom import handshake

    outcomes: Counter[str] = Counter()
    imeis = [f"{879_000_000_000_000 + i:015d}" for i in range(300)]

    async def attempt(imei: str) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except ConnectionRefusedError:
            outcomes["refused"] += 1
            return
        except (OSError, TimeoutError):
            outcomes["connect_error"] += 1
            return
        try:
            writer.write(handshake(imei))
            await asyncio.wait_for(reader.readexactly(19), 5)  # 16-byte header + "*<S"
            outcomes["answered"] += 1
        except asyncio.IncompleteReadError:
            outcomes["closed_before_answer"] += 1
        except ConnectionResetError:
            outcomes["reset_before_answer"] += 1
        except (OSError, TimeoutError):
            outcomes["no_answer"] += 1
        finally:
            writer.close()

    loop = asyncio.get_running_loop()
    tasks = []
    started = loop.time()
    stopped = False
    count = int(seconds * rate)
    for number in range(count):
        await asyncio.sleep(max(0.0, started + number / rate - loop.time()))
        if not stopped and loop.time() - started >= seconds / 2:
            stop()
            stopped = True
        tasks.append(asyncio.create_task(attempt(imeis[number % len(imeis)])))
    await asyncio.gather(*tasks)
    return {"attempts": count, **dict(outcomes)}


def handover(owner_dsn: str, app_password: str, workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    """Two plain ingest processes on one port; SIGTERM to the first while connections keep arriving."""
    first = Supervised(None, owner_dsn, app_password, workdir)
    second = Supervised(None, owner_dsn, app_password, workdir, port=first.port)
    first.start()
    second.start()
    try:
        assert first.proc is not None
        proc = first.proc
        outcome = asyncio.run(
            _connect_storm(first.port, seconds, rate, lambda: os.kill(proc.pid, signal.SIGTERM))
        )
        first.proc.wait(60)
    finally:
        first.stop()
        second.stop()
    result = {
        "scenario": "handover",
        "connections_per_s": rate,
        "seconds": seconds,
        **outcome,
        "first_exit_code": first.proc.returncode if first.proc else None,
        "note": "refused must be 0 (the port always has a listener); connections the stopping process had "
        "accepted or queued end before their answer (reset/closed) and the tracker reconnects",
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


async def _server_facts(owner_dsn: str) -> tuple[str, str]:
    import asyncpg

    conn = await asyncpg.connect(owner_dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        data_dir = await conn.fetchval("SHOW data_directory")
    finally:
        await conn.close()
    return str(version), str(data_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per process count")
    add_quick_argument(parser)  # 1 and 2 processes, 3 s of load each, a slower handover storm
    parser.add_argument(
        "--counts",
        help=f"process counts, e.g. 1,2,4 (default {','.join(map(str, PROCESS_COUNTS))}; quick: 1,2)",
    )
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every server (e.g. INGEST_DIRECT_COPY=false); repeatable",
    )
    parser.add_argument(
        "--can-share",
        type=float,
        help="trackers reporting CAN values (0-1): the 29-field FLEX 2.0 profile of bench_ingest.py; "
        "default: FLEX 2.0 without CAN fields",
    )
    args = parser.parse_args()
    if args.can_share is not None:
        LOAD_OPTIONS.update(flex="2.0-can", can_share=args.can_share)
    SERVER_ENV.update(dict(item.split("=", 1) for item in args.server_env))
    duration = 3.0 if args.quick else args.duration
    chosen = args.counts or ("1,2" if args.quick else ",".join(map(str, PROCESS_COUNTS)))
    counts = [int(item) for item in chosen.split(",") if item.strip()]

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-processes-"))
    embedded = None
    owner_dsn = args.database_url
    if owner_dsn is None:
        from fleet.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(workdir / "pg")
        owner_dsn = embedded.start()
    app_password = secrets.token_urlsafe(24)
    report = BenchReport(
        "ingest_processes",
        quick=args.quick,
        results_dir=args.output_dir,
        parameters={
            "protocol": "navtelecom",
            "flex": LOAD_OPTIONS["flex"],
            "can_share": LOAD_OPTIONS.get("can_share", 0.0),
            "records_per_frame": RECORDS_PER_FRAME,
            "connections": CONNECTIONS,
            "duration_s": duration,
            "process_counts": counts,
            "database": "embedded" if embedded else "DATABASE_URL",
            "how": "fleet serve --workers N --role ingest; one simulator process at the maximum rate",
            "server_env": args.server_env,
        },
    )
    migrate_req = Path("/proc/sys/net/ipv4/tcp_migrate_req")
    report.machine["tcp_migrate_req"] = migrate_req.read_text().strip() if migrate_req.exists() else None
    results: dict[str, Any] = {}
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
            check=False,
        )
        if migrate.returncode != 0:
            raise RuntimeError(migrate.stderr)
        version, data_dir = asyncio.run(_server_facts(owner_dsn))
        report.set_postgres_version(version)
        postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
        runs = []
        for number, workers in enumerate(counts):
            base = 870_000_000_000_000 + number * 100_000
            runs.append(
                run_count(
                    workers,
                    owner_dsn,
                    app_password,
                    workdir,
                    postmaster,
                    duration,
                    base,
                    1.0 if args.quick else 2.0,
                )
            )
        results["runs"] = runs
        results["handover"] = handover(
            owner_dsn,
            app_password,
            workdir,
            rate=500.0 if args.quick else 2000.0,
            seconds=2.0 if args.quick else 6.0,
        )
        results["by_processes"] = {
            str(run["ingest_processes"]): {
                key: run.get(key)
                for key in (
                    "records_per_s",
                    "p99_ack_ms",
                    "cpu_us_per_record_server",
                    "cpu_us_per_record_postgres",
                    "records_per_server_core_s",
                    "records_per_postgres_core_s",
                )
            }
            for run in runs
        }
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report.results = results
    stamped, _latest = report.write()
    print(stamped.read_text(), end="")  # what was written, not a second document with its own end time
    return 0


if __name__ == "__main__":
    sys.exit(main())
