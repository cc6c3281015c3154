#!/usr/bin/env python3
"""Live-view benchmark: 1,000 WebSocket fleet viewers on one API process while trackers stream.

    make bench-live            # or: .venv/bin/python bench/bench_live.py [--duration 30] [--output FILE] [--quick]

Results: ``bench/results/live.json`` and ``live-<UTC timestamp>.json`` (``bench/common.py``); ``--quick``: the
owners' scenario at a tenth of the size (100 viewers, 100 trackers) for 3 s, no fleet page.

Part 1 (this file). One real `fleet serve --role ingest --role api` process (uvloop) on a fresh embedded
PostgreSQL (or BENCH_DATABASE_URL); simulated Navtelecom trackers (`fleet.simulate`, FLEX 2.0, one
record per frame, so every record is committed and published on its own) in a second process; the viewers —
`websockets` clients, one connection each to `WS /ws/fleet` — in a third. Scenarios (each with its own viewers):

* ``owners``: 1,000 viewers of 200 owner accounts (5 viewers each, say dispatchers), every account owning 5 of
  the 1,000 trackers' vehicles: every position reaches 5 viewers, and routing it must not cost the other 995
  (tenant filtering);
* ``superusers``: 1,000 viewers of 20 superuser accounts, all seeing all 10 streaming trackers' vehicles: every
  position reaches all 1,000 (the fan-out at its widest; 10,000 messages a second);
* ``owners_uncoalesced``: ``owners`` on a server with ``LIVE_FLEET_INTERVAL_SEC=0``: the same pipeline without
  the one-position-per-vehicle-per-second coalescing, to show how much of the latency that policy adds.

Each scenario runs on a server process of its own (so that memory is measured on a fresh heap).

Measured per scenario:

* latency from commit to receipt: every `position` message carries `committed_at`, stamped by the ingest
  process right after its batch committed; the viewer process (same machine, same clock) takes the difference
  when the message arrives: p50/p90/p99/max over every position received (target p99 <= 1 s). The fleet
  stream's one-position-per-vehicle-per-second coalescing is part of what is measured;
* memory per viewer: the server's RSS after the viewers connected (and received their first message) minus
  before, divided by the viewers (target <= 50 KB);
* CPU per delivered message: the server process's CPU time while the trackers stream *with* the viewers,
  minus the CPU time of the same load streamed just before *without* viewers (the baseline measured in the
  same run: ingestion, storage and the bus cost the same in both), divided by the messages the viewers
  received. PostgreSQL's and the other processes' CPU are reported beside it.

Part 2 — the 5,000-vehicle fleet page in headless Chromium — is `bench/bench_fleet_page.py` (built with the
web UI); when that file exists it is run after part 1 and its JSON lands under ``"fleet_page"``.

Prints one JSON document (also written to ``bench/results/live.json``) with the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import (  # noqa: E402 - the ingest benchmark's machine, process and CPU helpers
    CpuMeter,
    Server,
    _server_version,
    rss_bytes,
    simulate,
)

from bench.common import BenchReport, add_quick_argument, machine_info  # noqa: E402
from fleet.simulate.engine import SimulationConfig  # noqa: E402

FIRST_IMEI = 870_000_000_000_000
CONNECT_CONCURRENCY = 100
FLEET_PAGE_BENCH = ROOT / "bench" / "bench_fleet_page.py"


@dataclass(frozen=True)
class Scenario:
    name: str
    viewers: int
    accounts: int
    superusers: bool
    trackers: int  # streaming trackers (one vehicle each), one record per second each
    owned_per_account: int  # vehicles each owner account sees (owners only)
    fleet_interval: float = 1.0  # LIVE_FLEET_INTERVAL_SEC of the server (0: no coalescing)


SCENARIOS = {
    "owners": Scenario("owners", 1000, 200, False, 1000, 5),
    "superusers": Scenario("superusers", 1000, 20, True, 10, 0),
    # The owners' load without the fleet stream's coalescing: the pipeline's own latency, for comparison.
    "owners_uncoalesced": Scenario("owners_uncoalesced", 1000, 200, False, 1000, 5, fleet_interval=0.0),
}


# --- the server ------------------------------------------------------------------------------------------------
class LiveServer(Server):
    """`fleet serve --role ingest --role api`: trackers in, viewers out, one process."""

    def __init__(self, owner_dsn: str, app_password: str, workdir: Path, fleet_interval: float = 1.0) -> None:
        super().__init__(owner_dsn, app_password, workdir)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.api_port = int(sock.getsockname()[1])
        self.env = {k: v for k, v in self.env.items() if not k.startswith(("API_", "LIVE_", "RATE_LIMIT_"))}
        self.env.update(
            API_HOST="127.0.0.1",
            API_PORT=str(self.api_port),
            RATE_LIMIT_API_PER_MINUTE="1000000",
            LIVE_MAX_VIEWERS="20000",
            LIVE_MAX_VIEWERS_PER_USER="1000",
            UNKNOWN_DEVICE_POLICY="register",
            LIVE_FLEET_INTERVAL_SEC=str(fleet_interval),
        )

    @property
    def secret_key(self) -> str:
        return self.env["SECRET_KEY"]

    def start(self) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet", "serve", "--role", "ingest", "--role", "api"],
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
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
                    socket.create_connection(("127.0.0.1", self.api_port), timeout=0.2),
                ):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start listening")


# --- data -------------------------------------------------------------------------------------------------------
async def reset(owner_dsn: str) -> None:
    """Empty the fleet between scenarios: vehicles left from one (going offline) must not load the next."""
    import asyncpg

    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute(
            "TRUNCATE events, positions, vehicle_last_positions, devices, vehicle_access, vehicles, "
            "refresh_tokens, api_keys, users RESTART IDENTITY CASCADE"
        )
    finally:
        await conn.close()


async def prepare(owner_dsn: str, secret: str, scenario: Scenario, first_imei: int) -> list[str]:
    """Vehicles with the simulated trackers, the accounts, and one access token per viewer."""
    import asyncpg

    from fleet.auth import tokens

    conn = await asyncpg.connect(owner_dsn)
    try:
        vehicles = [
            r[0]
            for r in await conn.fetch(
                """INSERT INTO vehicles (name) SELECT $1 || '-' || g FROM generate_series(1, $2) g RETURNING id""",
                scenario.name,
                scenario.trackers,
            )
        ]
        await conn.execute(
            """INSERT INTO devices (imei, vehicle_id)
               SELECT lpad((($1::bigint) + n - 1)::text, 15, '0'), v
               FROM unnest($2::bigint[]) WITH ORDINALITY AS t(v, n)""",
            first_imei,
            vehicles,
        )
        role = "superuser" if scenario.superusers else "owner"
        users = [
            r[0]
            for r in await conn.fetch(
                """INSERT INTO users (email, role, status)
                   SELECT $1 || '-' || g || '@bench.example', $2, 'active' FROM generate_series(1, $3) g
                   RETURNING id""",
                f"{scenario.name}-{secrets.token_hex(3)}",
                role,
                scenario.accounts,
            )
        ]
        if not scenario.superusers:
            grants = [
                (user, vehicles[(number * scenario.owned_per_account + k) % len(vehicles)])
                for number, user in enumerate(users)
                for k in range(scenario.owned_per_account)
            ]
            await conn.copy_records_to_table(
                "vehicle_access", records=grants, columns=["user_id", "vehicle_id"]
            )
        # One sign-in session per account (a token's session must be one of its user's: refresh_tokens).
        sessions = {user: tokens.new_session_id() for user in users}
        await conn.executemany(
            """INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
               VALUES ($1, $2, $3, $4, now() + interval '1 day')""",
            [
                (secrets.token_hex(16), user, session, secrets.token_hex(32))
                for user, session in sessions.items()
            ],
        )
    finally:
        await conn.close()
    per_account = scenario.viewers // scenario.accounts
    return [
        tokens.issue_access_token(
            secret, user_id=user, role=role, token_version=0, session_id=sessions[user], ttl_sec=3600
        )[0]
        for user in users
        for _ in range(per_account)
    ]


# --- the viewers (their own process) ------------------------------------------------------------------------------
def _viewers_child(url: str, tokens: list[str], pipe: Any) -> None:
    import uvloop

    uvloop.run(_viewers(url, tokens, pipe))


async def _viewers(url: str, tokens: list[str], pipe: Any) -> None:
    import orjson
    from websockets.asyncio.client import connect

    latencies = array("d")
    counts: dict[str, int] = {}
    recording = False
    connected = 0
    errors: list[str] = []

    async def viewer(token: str, gate: asyncio.Semaphore, ready: asyncio.Event) -> None:
        nonlocal connected
        try:
            async with gate:
                ws = await connect(
                    f"{url}?token={token}", compression=None, open_timeout=60, ping_interval=None
                )
            async with ws:
                first = True
                async for raw in ws:
                    now = time.time()
                    message = orjson.loads(raw)
                    if first:
                        first = False
                        connected += 1
                        if connected == len(tokens):
                            ready.set()
                    if not recording:
                        continue
                    kind = message["type"]
                    counts[kind] = counts.get(kind, 0) + 1
                    if kind == "position" and message.get("committed_at"):
                        committed = datetime.fromisoformat(message["committed_at"]).timestamp()
                        latencies.append(now - committed)
        except Exception as err:  # reported, not fatal: the count of connected viewers says the rest
            if len(errors) < 5:
                errors.append(f"{type(err).__name__}: {err}")

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    ready = asyncio.Event()
    started = time.monotonic()
    tasks = [asyncio.create_task(viewer(token, gate, ready)) for token in tokens]
    with contextlib.suppress(TimeoutError):  # the count of connected viewers tells what happened
        await asyncio.wait_for(ready.wait(), 120)
    loop = asyncio.get_running_loop()
    pipe.send({"connected": connected, "connect_s": round(time.monotonic() - started, 2), "errors": errors})
    await loop.run_in_executor(None, pipe.recv)  # "record"
    recording = True
    cpu0 = time.process_time()
    await loop.run_in_executor(None, pipe.recv)  # "stop"
    recording = False
    cpu = time.process_time() - cpu0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send({"counts": counts, "latencies": latencies.tobytes(), "cpu_s": round(cpu, 3), "errors": errors})


async def warm_up(url: str, token: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"{url}?token={token}", compression=None) as ws:
        await ws.recv()


def percentiles(values: array) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1)}


# --- one scenario ----------------------------------------------------------------------------------------------------
def run_scenario(
    server: LiveServer, owner_dsn: str, scenario: Scenario, duration: float, first_imei: int
) -> dict[str, Any]:
    tokens = asyncio.run(prepare(owner_dsn, server.secret_key, scenario, first_imei))
    config = SimulationConfig(
        port=server.port,
        devices=scenario.trackers,
        rate=float(scenario.trackers),  # one record per tracker per second
        duration=duration,
        records_per_frame=1,
        first_imei=first_imei,
        drain_timeout=10.0,
        duration_from_login=True,
    )
    # Baseline: the same trackers streaming to a server without viewers (ingestion, storage and bus only).
    baseline_meter = CpuMeter(server.pid)
    baseline = simulate(config, baseline_meter)
    baseline_cpu = baseline_meter.stop(baseline["records_acked"])
    baseline_server_s = baseline_cpu["server_us_per_record"] * baseline["records_acked"] / 1e6

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    url = f"ws://127.0.0.1:{server.api_port}/ws/fleet"
    asyncio.run(warm_up(url, tokens[0]))  # the hub starts with the first viewer: not part of "per viewer"
    time.sleep(1.0)
    rss_before = rss_bytes(server.pid)
    process = context.Process(target=_viewers_child, args=(url, tokens, child), daemon=True)
    process.start()
    joined = parent.recv()
    time.sleep(3.0)  # let the allocator settle and the hellos go out
    rss_after = rss_bytes(server.pid)

    parent.send("record")
    meter = CpuMeter(server.pid)
    # New black-box records (indexes, hence times, after the baseline's): nothing is a retransmission.
    streamed = simulate(replace(config, first_index=10_000_000), meter)
    parent.send("stop")
    received = parent.recv()
    process.join(30)
    cpu = meter.stop(streamed["records_acked"])
    server_s = cpu["server_us_per_record"] * streamed["records_acked"] / 1e6
    latencies = array("d")
    latencies.frombytes(received["latencies"])
    delivered = sum(received["counts"].values())
    viewers = joined["connected"]
    result = {
        "scenario": scenario.name,
        "viewers": viewers,
        "viewers_requested": scenario.viewers,
        "accounts": scenario.accounts,
        "account_role": "superuser" if scenario.superusers else "owner",
        "fleet_interval_sec": scenario.fleet_interval,
        "streaming_trackers": scenario.trackers,
        "vehicles_per_viewer": scenario.trackers if scenario.superusers else scenario.owned_per_account,
        "connect_s": joined["connect_s"],
        "records_acked": streamed["records_acked"],
        "records_per_s": round(streamed["records_acked"] / max(streamed["elapsed_s"], 1e-9), 1),
        "messages_received": received["counts"],
        "messages_per_s": round(delivered / max(streamed["elapsed_s"], 1e-9), 1),
        "latency_commit_to_receipt_ms": percentiles(latencies),
        "positions_timed": len(latencies),
        "server_rss_before_mib": round(rss_before / 2**20, 1),
        "server_rss_after_mib": round(rss_after / 2**20, 1),
        "rss_per_viewer_kib": round((rss_after - rss_before) / max(viewers, 1) / 1024, 1),
        "cpu_with_viewers": cpu,
        "cpu_baseline_without_viewers": baseline_cpu,
        "server_cpu_s": round(server_s, 3),
        "server_cpu_baseline_s": round(baseline_server_s, 3),
        "server_cpu_us_per_delivered_message": (
            round((server_s - baseline_server_s) / delivered * 1e6, 1) if delivered else None
        ),
        "viewer_process_cpu_s": received["cpu_s"],
        "client_errors": received["errors"] or joined["errors"],
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def fleet_page_part(output_dir: Path) -> dict[str, Any]:
    """Part 2 (the web UI's Chromium benchmark), when it exists."""
    if not FLEET_PAGE_BENCH.exists():
        return {"skipped": f"{FLEET_PAGE_BENCH.relative_to(ROOT)} does not exist yet"}
    target = output_dir / "fleet_page.tmp"  # the page's own result lands in fleet_page.json (bench/common.py)
    done = subprocess.run(
        [sys.executable, str(FLEET_PAGE_BENCH), "--output", str(target)], capture_output=True, text=True
    )
    if done.returncode != 0:
        return {"failed": done.returncode, "stderr": done.stderr[-2000:]}
    try:
        return dict(json.loads(target.read_text()))
    except (OSError, ValueError) as err:
        return {"failed": f"no JSON result: {err}", "stdout": done.stdout[-2000:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of streaming per measurement")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--skip-fleet-page", action="store_true", help="part 1 only")
    add_quick_argument(parser)
    args = parser.parse_args()
    chosen = {name: SCENARIOS[name] for name in args.scenario or list(SCENARIOS)}
    if (
        args.quick
    ):  # the owners' pipeline at a tenth of the size, briefly; the fleet page is its own benchmark
        chosen = {"owners": replace(SCENARIOS["owners"], viewers=100, accounts=20, trackers=100)}
        args.duration, args.skip_fleet_page = 3.0, True
    report = BenchReport(
        "live",
        quick=args.quick,
        parameters={
            "duration_s": args.duration,
            "scenarios": {name: scenario.__dict__ for name, scenario in chosen.items()},
        },
    )
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-live-"))
    embedded = None
    owner_dsn = args.database_url
    if owner_dsn is None:
        from fleet.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(workdir / "pg")
        owner_dsn = embedded.start()
    app_password = secrets.token_urlsafe(24)
    results: dict[str, Any] = {
        "benchmark": "live",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "parameters": {
            "duration_s": args.duration,
            "tracker_rate_hz": 1.0,
            "records_per_frame": 1,
            "stream": "/ws/fleet",
            "database": "embedded" if embedded else "BENCH_DATABASE_URL",
        },
    }
    server: LiveServer | None = None
    try:
        results["postgres_version"], CpuMeter.postmaster = asyncio.run(_server_version(owner_dsn))
        scenarios = []
        for number, scenario in enumerate(chosen.values()):
            server = LiveServer(owner_dsn, app_password, workdir, scenario.fleet_interval)
            server.start()  # migrates the database at its first start
            asyncio.run(reset(owner_dsn))
            scenarios.append(
                run_scenario(server, owner_dsn, scenario, args.duration, FIRST_IMEI + number * 100_000)
            )
            server.stop()
        results["scenarios"] = scenarios
        results["summary"] = {
            s["scenario"]: {
                "viewers": s["viewers"],
                "latency_p50_ms": s["latency_commit_to_receipt_ms"]["p50"],
                "latency_p99_ms": s["latency_commit_to_receipt_ms"]["p99"],
                "rss_per_viewer_kib": s["rss_per_viewer_kib"],
                "server_cpu_us_per_delivered_message": s["server_cpu_us_per_delivered_message"],
                "messages_per_s": s["messages_per_s"],
            }
            for s in scenarios
        }
        results["targets"] = {"latency_p99_ms": 1000, "rss_per_viewer_kib": 50}
    finally:
        if server is not None:
            server.stop()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results["fleet_page"] = (
        {"skipped": "--skip-fleet-page"}
        if args.skip_fleet_page
        else fleet_page_part(ROOT / "bench" / "results")
    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    report.set_postgres_version(results["postgres_version"])
    report.results["scenarios"] = results["scenarios"]
    for s in results["scenarios"]:
        name = s["scenario"]
        report.add_baseline(f"{name}.server_cpu_s_without_viewers", s["server_cpu_baseline_s"])
        report.add_target(
            f"{name}.latency_p99_ms", s["latency_commit_to_receipt_ms"]["p99"], 1000, higher_is_better=False
        )
        report.add_target(f"{name}.rss_per_viewer_kib", s["rss_per_viewer_kib"], 50, higher_is_better=False)
    report.results["summary"] = results["summary"]
    report.results["fleet_page"] = results["fleet_page"]
    report.note(
        "server CPU per delivered message = (server CPU with viewers - the same load without) / messages"
    )
    report.write()
    return 0 if report.targets_met() else 1


if __name__ == "__main__":
    sys.exit(main())
