#!/usr/bin/env python3
"""Perf sanity check of the HTTP API (seed 002): requests/s and p50/p95/p99 latency of key endpoints.

    python tools/perf_sanity.py --spawn --runs 200 --concurrency 20
    python tools/perf_sanity.py --base http://127.0.0.1:8080 --email admin@fleet.local --password ...

`--spawn` starts a private embedded PostgreSQL in a temporary directory, seeds it (a superuser, vehicles
with trackers, and one day of 1 Hz positions — 86,400 rows — loaded with COPY as the schema owner), starts
`fleet serve --role api` on a free port against it, and measures:

* `GET /health`, `GET /vehicles`, latest position (`GET /vehicles/{id}/status`) with `--concurrency`
  clients sharing `--runs` requests;
* one day of 1 Hz history (`GET /vehicles/{id}/positions`, 86,400 points in one answer), one request at a
  time (`--history-runs`), because its target is the latency of a single answer.

It prints one JSON document with the machine's description and the figures; targets (seed 001/002 issue):
`/vehicles` p99 <= 25 ms at concurrency 20, one day of history <= 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVE_ON_UVLOOP = """
import uvloop
from fleet.cli import settings_or_exit
from fleet.runtime import serve
uvloop.run(serve(settings_or_exit(), ["api"]))
"""
TARGETS = {"vehicles_p99_ms": 25.0, "history_day_ms": 500.0}
HISTORY_POINTS = 86_400
PASSWORD = "perf-sanity-" + secrets.token_hex(8)


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    bytes: int = 0
    elapsed: float = 0.0


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summarise(sample: Sample, concurrency: int) -> dict[str, Any]:
    values = sorted(sample.latencies)
    ms = [v * 1000 for v in values]
    return {
        "requests": len(values) + sample.errors,
        "concurrency": concurrency,
        "errors": sample.errors,
        "statuses": {str(k): v for k, v in sorted(sample.statuses.items())},
        "rps": round(len(values) / sample.elapsed, 1) if sample.elapsed else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "p50_ms": round(percentile(ms, 50), 2) if ms else None,
        "p95_ms": round(percentile(ms, 95), 2) if ms else None,
        "p99_ms": round(percentile(ms, 99), 2) if ms else None,
        "max_ms": round(ms[-1], 2) if ms else None,
        "mean_bytes": round(sample.bytes / len(values)) if values else 0,
    }


class KeepAliveConnection:
    """One HTTP/1.1 keep-alive connection doing GETs with as little client-side work as possible.

    The load generator shares the machine with the server and PostgreSQL; a general-purpose client
    spends more CPU per request than the endpoints under test, which would measure the client instead.
    The API answers with Content-Length (no chunked bodies), which is all this reader handles.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, int]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**24)
        assert self.reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n".encode("latin-1"))
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, len(body)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


async def measure(
    base: str,
    path: str,
    *,
    runs: int,
    concurrency: int,
    headers: dict[str, str],
    warmup_rounds: int = 3,
    meter: CpuMeter | None = None,
) -> dict[str, Any]:
    """`runs` GETs of `path` spread over `concurrency` keep-alive connections, measured in steady state.

    Warm-up: `warmup_rounds` requests on every connection at once, so that the server's database pool
    has grown to its working size and each pooled connection has prepared its statements — otherwise a
    short run measures connection set-up rather than the endpoint.
    """
    url = httpx.URL(base)
    connections = [KeepAliveConnection(url.host, url.port or 80) for _ in range(concurrency)]
    for _ in range(warmup_rounds):
        await asyncio.gather(*(conn.get(path, headers) for conn in connections))
    sample = Sample()
    remaining = runs

    async def worker(conn: KeepAliveConnection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                status, size = await conn.get(path, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                sample.errors += 1
                await conn.close()
                continue
            took = time.perf_counter() - started
            sample.statuses[status] = sample.statuses.get(status, 0) + 1
            if status == 200:
                sample.latencies.append(took)
                sample.bytes += size
            else:
                sample.errors += 1

    cpu_before = meter.snapshot() if meter else None
    client_before = time.process_time()
    began = time.perf_counter()
    await asyncio.gather(*(worker(conn) for conn in connections))
    sample.elapsed = time.perf_counter() - began
    client_cpu = time.process_time() - client_before
    for conn in connections:
        await conn.close()
    result = summarise(sample, concurrency)
    if meter is not None and cpu_before is not None and sample.latencies:
        requests = len(sample.latencies) + sample.errors
        result.update(CpuMeter.per_request(cpu_before, meter.snapshot(), requests))
        # The load generator shares the machine: its own CPU says whether it, not the server, is the limit.
        result["client_cpu_ms_per_request"] = round(client_cpu / requests * 1000, 3)
    return result


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent:
                found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds used by the API process and by the PostgreSQL backends while an endpoint is measured.

    On a shared machine, latency depends on what else runs; CPU per request does not, so both are reported.
    """

    def __init__(self, api_pid: int | None, postmaster_pid: int | None) -> None:
        self.api_pid, self.postmaster_pid = api_pid, postmaster_pid

    def snapshot(self) -> tuple[float, dict[int, float]]:
        api = _cpu_seconds(self.api_pid) if self.api_pid else 0.0
        backends = (
            {pid: _cpu_seconds(pid) for pid in _children(self.postmaster_pid)} if self.postmaster_pid else {}
        )
        return api, backends

    @staticmethod
    def per_request(
        before: tuple[float, dict[int, float]], after: tuple[float, dict[int, float]], n: int
    ) -> dict[str, float]:
        api = after[0] - before[0]
        db = sum(value - before[1].get(pid, 0.0) for pid, value in after[1].items())
        return {
            "api_cpu_ms_per_request": round(api / n * 1000, 3),
            "db_cpu_ms_per_request": round(db / n * 1000, 3),
        }


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return info


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- seeding -----------------------------------------------------------------------------------------------
async def seed(owner_dsn: str, vehicles: int, day_start: datetime) -> dict[str, Any]:
    """A superuser, `vehicles` vehicles with one tracker each, and a day of 1 Hz positions on the first."""
    import asyncpg

    from fleet.passwords import hash_password

    conn = await asyncpg.connect(owner_dsn)
    try:
        email = f"perf-{secrets.token_hex(4)}@example.com"
        user_id = await conn.fetchval(
            """INSERT INTO users (email, password_hash, role, status, approved_at)
               VALUES ($1, $2, 'superuser', 'active', now()) RETURNING id""",
            email,
            await hash_password(PASSWORD),
        )
        vehicle_ids = []
        device_ids = []
        for i in range(vehicles):
            vid = await conn.fetchval(
                "INSERT INTO vehicles (name, last_seen_at) VALUES ($1, now()) RETURNING id",
                f"perf truck {i:03d}",
            )
            did = await conn.fetchval(
                "INSERT INTO devices (imei, vehicle_id, last_seen_at) VALUES ($1, $2, now()) RETURNING id",
                f"86{secrets.randbelow(10**13):013d}",
                vid,
            )
            await conn.execute(
                "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)", user_id, vid
            )
            vehicle_ids.append(vid)
            device_ids.append(did)
        await conn.execute("SELECT fleet_ensure_partition('positions', $1)", day_start)
        await conn.execute("SELECT fleet_ensure_partition('positions', $1)", day_start + timedelta(days=1))
        records = [
            (
                device_ids[0],
                vehicle_ids[0],
                i,
                day_start + timedelta(seconds=i),
                day_start + timedelta(seconds=i),
                True,
                50.45 + (i % 3600) * 1e-5,
                30.52 + (i // 3600) * 1e-3,
                float(i % 90),
                float(i % 360),
                120.0,
                12,
                0.9,
            )
            for i in range(HISTORY_POINTS)
        ]
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "positions",
            records=records,
            columns=[
                "device_id",
                "vehicle_id",
                "record_index",
                "device_time",
                "fix_time",
                "valid",
                "latitude",
                "longitude",
                "speed",
                "course",
                "altitude",
                "satellites",
                "hdop",
            ],
        )
        copy_sec = time.perf_counter() - started
        await conn.execute("ANALYZE positions")
        server_version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    return {
        "email": email,
        "vehicle_id": vehicle_ids[0],
        "vehicles": vehicles,
        "copy_sec": round(copy_sec, 2),
        "postgres_version": server_version,
    }


class SpawnedServer:
    """Embedded PostgreSQL owned by this tool, and `fleet serve --role api` against it."""

    def __init__(self, log_path: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-perf-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.db: Any = None
        self.app_password = secrets.token_urlsafe(24)

    async def start_database(self) -> str:
        from fleet.config import Settings
        from fleet.db import Database

        # A runtime directory outside the temporary data directory, which is removed at the end (pgserver
        # would otherwise recreate it there while shutting down).
        runtime_dir = Path(tempfile.gettempdir()) / "fleet-perf-xdg"
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
        settings = Settings(env="development", data_dir=self.dir, db_app_password=self.app_password)
        self.db = Database(settings)
        await self.db.start(migrate_schema=True, pool=False)
        assert self.db.owner_dsn is not None
        return str(self.db.owner_dsn)

    def start_api(self, owner_dsn: str, loop: str) -> None:
        env = {
            **os.environ,
            "ENV": "development",
            "DATA_DIR": str(self.dir),
            "DATABASE_URL": owner_dsn,
            "DB_APP_PASSWORD": self.app_password,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "RATE_LIMIT_API_PER_MINUTE": "10000000",
            "RATE_LIMIT_LOGIN_PER_MINUTE": "1000",
            "DB_POOL_MAX": os.environ.get("DB_POOL_MAX", "10"),
        }
        env.pop("REDIS_URL", None)
        env.pop("SMTP_URL", None)
        self.log = self.log_path.open("wb")
        command = [sys.executable, "-m", "fleet", "serve", "--role", "api"]
        if loop == "uvloop":
            # The same runtime and `api` role as `fleet serve --role api`, on uvloop (DESIGN §2).
            command = [sys.executable, "-c", SERVE_ON_UVLOOP]
        self.proc = subprocess.Popen(
            command,
            env=env,
            cwd=self.dir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the API exited early; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the API did not become healthy; see {self.log_path}")

    def meter(self) -> CpuMeter:
        postmaster = None
        pid_file = self.dir / "pg" / "postmaster.pid"
        if pid_file.exists():
            postmaster = int(pid_file.read_text().split()[0])
        return CpuMeter(self.proc.pid if self.proc else None, postmaster)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.db is not None:
            await self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> str:
    response = await client.post("/auth/login", json={"email": email, "password": password})
    if response.status_code != 200:
        raise SystemExit(f"sign-in failed: HTTP {response.status_code} {response.text[:200]}")
    return str(response.json()["access_token"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    server: SpawnedServer | None = None
    seeded: dict[str, Any] = {}
    try:
        if args.spawn:
            server = SpawnedServer(Path(args.server_log))
            owner_dsn = await server.start_database()
            seeded = await seed(owner_dsn, args.vehicles, day_start)
            server.start_api(owner_dsn, args.loop)
            base = server.url
        else:
            base = args.base.rstrip("/")
            if args.seed_dsn:
                seeded = await seed(args.seed_dsn, args.vehicles, day_start)
        meter = server.meter() if server is not None else None
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            if args.token:
                token = args.token
            else:
                email = seeded.get("email") or args.email
                password = PASSWORD if seeded else args.password
                if not email or not password:
                    raise SystemExit("--base needs --token, or --email and --password, or --seed-dsn")
                token = await sign_in(client, email, password)
            headers = {"Authorization": f"Bearer {token}"}
            vehicle_id = seeded.get("vehicle_id")
            if vehicle_id is None:
                listed = (await client.get("/vehicles", headers=headers)).json()
                if not listed.get("items"):
                    raise SystemExit("no vehicle visible to measure")
                vehicle_id = listed["items"][0]["id"]
            history = (
                f"/vehicles/{vehicle_id}/positions?from={day_start.isoformat().replace('+00:00', 'Z')}"
                f"&to={(day_start + timedelta(days=1)).isoformat().replace('+00:00', 'Z')}&limit=100000"
            )
            results = {
                "health": await measure(
                    base, "/health", runs=args.runs, concurrency=args.concurrency, headers={}, meter=meter
                ),
                "vehicles": await measure(
                    base,
                    "/vehicles",
                    runs=args.runs,
                    concurrency=args.concurrency,
                    headers=headers,
                    meter=meter,
                ),
                "latest_position": await measure(
                    base,
                    f"/vehicles/{vehicle_id}/status",
                    runs=args.runs,
                    concurrency=args.concurrency,
                    headers=headers,
                    meter=meter,
                ),
                "history_day_1hz": await measure(
                    base,
                    history,
                    runs=args.history_runs,
                    concurrency=1,
                    headers=headers,
                    warmup_rounds=1,
                    meter=meter,
                ),
            }
            points = (await client.get(history, headers=headers)).json().get("total")
    finally:
        if server is not None:
            await server.stop()
    vehicles_p99 = results["vehicles"]["p99_ms"]
    history_p50 = results["history_day_1hz"]["p50_ms"]
    return {
        "tool": "perf_sanity",
        "time": datetime.now(UTC).isoformat(),
        "machine": machine_info(),
        "mode": "spawn" if args.spawn else "base",
        "server_loop": args.loop if args.spawn else None,
        "client": "asyncio keep-alive HTTP/1.1 connections, one per concurrent client",
        "base": base,
        "runs": args.runs,
        "concurrency": args.concurrency,
        "seed": seeded,
        "history_points": points,
        "results": results,
        "targets": {
            "vehicles_p99_ms": {
                "target": TARGETS["vehicles_p99_ms"],
                "measured": vehicles_p99,
                "ok": vehicles_p99 is not None and vehicles_p99 <= TARGETS["vehicles_p99_ms"],
            },
            "history_day_ms": {
                "target": TARGETS["history_day_ms"],
                "measured_p50": history_p50,
                "measured_max": results["history_day_1hz"]["max_ms"],
                "ok": history_p50 is not None and history_p50 <= TARGETS["history_day_ms"],
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--spawn", action="store_true", help="start a private database and API server")
    where.add_argument("--base", help="URL of a running server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--runs", type=int, default=200, help="requests per endpoint")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent clients")
    parser.add_argument(
        "--history-runs", type=int, default=10, help="sequential requests of one day of history"
    )
    parser.add_argument("--vehicles", type=int, default=20, help="vehicles to seed")
    parser.add_argument("--token", help="--base: a bearer token (access token or API key)")
    parser.add_argument("--email", help="--base: sign in with this superuser")
    parser.add_argument("--password", help="--base: password of --email")
    parser.add_argument("--seed-dsn", help="--base: owner DSN of the server's database, to seed it first")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="--spawn: event loop of the server process",
    )
    parser.add_argument("--server-log", default=str(Path(tempfile.gettempdir()) / "fleet-perf-server.log"))
    args = parser.parse_args()
    import structlog

    # Keep stdout for the JSON report: library logs (embedded database, migrations) go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    if args.runs < 1 or args.concurrency < 1:
        parser.error("--runs and --concurrency must be positive")
    try:
        import uvloop

        report = uvloop.run(run(args))
    except ImportError:
        report = asyncio.run(run(args))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
