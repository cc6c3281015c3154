#!/usr/bin/env python3
"""Live-bus benchmark: PostgreSQL LISTEN/NOTIFY, Redis pub/sub and core NATS, fanned out to K processes.

    make bench-bus     # or: .venv/bin/python bench/bench_bus.py [--subscribers 4] [--duration 10] [--quick]

What the bus carries in production: the ingest writer publishes one small JSON payload per device and
committed batch (``fleet.ingest.service.live_event``, ~300 bytes) with ``publish_many``, and every API
process subscribes (``LiveHub``). This benchmark drives the project's own bus classes
(``fleet.ops.bus.PostgresBus`` / ``RedisBus`` / ``NatsBus``) the same way: one publisher process (this one)
and K subscriber processes (child processes of this script, each with its own bus connection, like K API
processes), on this machine's servers:

* PostgreSQL: a fresh embedded server (``pgserver``), or ``--database-url``;
* Redis: ``REDIS_URL`` (default ``redis://127.0.0.1:6379/12``); pub/sub ignores the database number;
* NATS: ``NATS_URL`` (default ``nats://127.0.0.1:4222``); core pub/sub, no JetStream.

Phases, each with a topic of its own:

* ``paced``: ``--rate`` events/s in ``publish_many`` calls of ``--batch`` events (the writer's batches), for
  ``--duration`` seconds: delivery latency (publisher's call → subscriber's receipt, same machine, one
  monotonic clock) p50/p99/max and the share delivered, per subscriber and over all;
* ``burst``: ``--burst`` events as fast as the publisher can push them (batches of ``--batch``): the publish
  rate, and the rate each subscriber received them at (first to last receipt); latency here is queueing;
* ``single``: ``--single`` events with one ``publish`` each (the command path), as fast as possible.

CPU seconds of the publisher, the subscribers and the bus server (the postmaster and its children, or the
``redis-server`` / ``nats-server`` process) are reported per 1,000 delivered events. The machine is shared:
the load average before and after is in the result; compare backends within one run.

Prints one JSON document (``bench/common.py``'s format, the figures under ``results``), also written to
``bench/results/bus-<UTC>.json`` and ``bench/results/bus.json``. ``--quick``: 2 subscribers, 2 s at 1,000
events/s, a burst of 5,000 and 200 single publishes (``bus-quick*.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.bench_ingest import _server_version  # noqa: E402
from bench.common import BenchReport, add_quick_argument, process_ticks  # noqa: E402
from fleet.config import Settings  # noqa: E402
from fleet.db import Database  # noqa: E402
from fleet.ops.bus import LiveBus, NatsBus, PostgresBus, RedisBus  # noqa: E402

BACKENDS = ("postgres", "redis", "nats")
# A payload shaped like fleet.ingest.service.live_event (the `positions` topic), plus the benchmark's fields.
SAMPLE = {
    "type": "positions",
    "device_id": 123456,
    "imei": "352093081234567",
    "vehicle_id": 4321,
    "count": 1,
    "time": "2026-12-05T04:00:00+00:00",
    "latitude": 55.751244,
    "longitude": 37.618423,
    "speed": 54.5,
    "course": 270,
    "altitude": 151,
    "satellites": 12,
    "valid": True,
    "committed_at": 1796443200.123456,
}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


# --- the bus of either side ---------------------------------------------------------------------------------


def make_bus(backend: str, target: str) -> tuple[LiveBus, Database | None]:
    """The project's bus class for `backend`; `target` is the owner DSN, Redis URL or NATS URL."""
    if backend == "postgres":
        db = Database(Settings(database_url=target, db_migrate_on_start=False, db_pool_min=1, db_pool_max=2))
        return PostgresBus(db), db
    if backend == "redis":
        return RedisBus(target), None
    return NatsBus(target, name="fleet-bench-bus"), None


# --- subscriber process -------------------------------------------------------------------------------------


async def subscriber(backend: str, target: str, topics: list[str]) -> dict[str, Any]:
    """Receive every phase's topic until its `end` marker; return latencies and counts."""
    bus, db = make_bus(backend, target)
    if db is not None:
        await db.start(migrate_schema=False)
    await bus.start()
    subs = [await bus.subscribe(topic, maxsize=10_000_000) for topic in topics]
    print("ready", flush=True)
    cpu0 = time.process_time()
    results: dict[str, Any] = {}

    async def drain(topic: str, sub: Any) -> None:
        latencies: list[float] = []
        first = last = None
        while True:
            payload = await sub.get()
            now = time.monotonic()
            if payload.get("end"):
                break
            latencies.append(now - payload["t"])
            first = now if first is None else first
            last = now
        results[topic] = {"latencies": latencies, "first": first, "last": last}

    try:
        await asyncio.wait_for(
            asyncio.gather(*(drain(t, s) for t, s in zip(topics, subs, strict=True))), timeout=600
        )
    finally:
        results["cpu_s"] = time.process_time() - cpu0
        await bus.close()
        if db is not None:
            await db.close()
    return results


# --- publisher (this process) -------------------------------------------------------------------------------


def _pids_named(name: str) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    pids.add(int(entry))
            except OSError:
                continue
    return pids


def _children_of(parent: int) -> set[int]:
    pids = {parent}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                    if line.startswith("PPid:"):
                        if int(line.split()[1]) == parent:
                            pids.add(int(entry))
                        break
            except OSError:
                continue
    return pids


def _postmaster(target: str) -> int | None:
    return asyncio.run(_server_version(target))[1]


async def publish_phases(
    bus: LiveBus, topics: dict[str, str], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Run the three phases; return per phase what the publisher saw (events, seconds, CPU)."""
    out: dict[str, dict[str, Any]] = {}
    seq = 0

    def batch(size: int) -> list[dict[str, Any]]:
        nonlocal seq
        now = time.monotonic()
        items = []
        for _ in range(size):
            seq += 1
            items.append({**SAMPLE, "seq": seq, "t": now})
        return items

    # paced: a batch every batch/rate seconds, on a fixed schedule (no drift).
    interval = args.batch / args.rate
    count = int(args.rate * args.duration)
    cpu0, started = time.process_time(), time.monotonic()
    sent = 0
    next_at = started
    while sent < count:
        await bus.publish_many(topics["paced"], batch(min(args.batch, count - sent)))
        sent += min(args.batch, count - sent)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    out["paced"] = {
        "events": sent,
        "seconds": time.monotonic() - started,
        "publisher_cpu_s": time.process_time() - cpu0,
    }
    await asyncio.sleep(1.0)  # each phase starts with the subscribers' queues empty
    # burst: as fast as possible.
    cpu0, started = time.process_time(), time.monotonic()
    sent = 0
    while sent < args.burst:
        size = min(args.batch, args.burst - sent)
        await bus.publish_many(topics["burst"], batch(size))
        sent += size
    out["burst"] = {
        "events": sent,
        "seconds": time.monotonic() - started,
        "publisher_cpu_s": time.process_time() - cpu0,
    }
    await asyncio.sleep(1.0)
    # single: one publish per event.
    cpu0, started = time.process_time(), time.monotonic()
    for _ in range(args.single):
        await bus.publish(topics["single"], batch(1)[0])
    out["single"] = {
        "events": args.single,
        "seconds": time.monotonic() - started,
        "publisher_cpu_s": time.process_time() - cpu0,
    }
    return out


async def _end_markers(bus: LiveBus, topics: dict[str, str]) -> None:
    # Repeated: a best-effort bus may drop one; subscribers stop at the first.
    for _ in range(3):
        for topic in topics.values():
            await bus.publish(topic, {"end": True})
        await asyncio.sleep(0.2)


def run_backend(backend: str, target: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One backend: start K subscribers, publish the phases, collect and summarise."""
    run = secrets.token_hex(3)
    topics = {phase: f"scaledata-bench-{run}-{phase}" for phase in ("paced", "burst", "single")}
    procs = []
    outs = []
    for number in range(args.subscribers):
        out = workdir / f"{backend}-{number}.json"
        outs.append(out)
        cmd = [sys.executable, __file__, "--subscriber", backend, target, str(out), *topics.values()]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{backend} subscriber did not start: {line!r}")

    postmaster = _postmaster(target) if backend == "postgres" else None

    def server_pids() -> set[int]:
        # PostgreSQL: the postmaster and its backends, read again at the end (the publisher's are new).
        if backend == "postgres":
            return _children_of(postmaster) if postmaster else set()
        return _pids_named("redis-server" if backend == "redis" else "nats-server")

    hz = os.sysconf("SC_CLK_TCK")

    async def publish() -> tuple[dict[str, dict[str, Any]], float]:
        bus, db = make_bus(backend, target)
        if db is not None:
            await db.start(migrate_schema=False)
        await bus.start()
        try:
            await asyncio.sleep(0.5)  # subscriptions settle on the server
            ticks0 = process_ticks(server_pids())
            phases = await publish_phases(bus, topics, args)
            await asyncio.sleep(1.0)  # let the last events arrive before the markers
            ticks1 = process_ticks(server_pids())
            server_cpu = sum(t - ticks0.get(pid, 0) for pid, t in ticks1.items()) / hz
            await _end_markers(bus, topics)
        finally:
            await bus.close()
            if db is not None:
                await db.close()
        return phases, server_cpu

    phases, server_cpu = asyncio.run(publish())
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    received = [json.loads(out.read_text()) for out in outs if out.exists()]
    summary: dict[str, Any] = {
        "backend": backend,
        "subscribers": args.subscribers,
        "subscribers_reporting": len(received),
        "server_cpu_s": round(server_cpu, 3),
        "subscribers_cpu_s": round(sum(r["cpu_s"] for r in received), 3),
        "phases": {},
    }
    delivered_total = 0
    publisher_cpu = 0.0
    for phase, topic in topics.items():
        sent = phases[phase]
        publisher_cpu += sent["publisher_cpu_s"]
        per_sub = [r.get(topic, {"latencies": [], "first": None, "last": None}) for r in received]
        lat = [v for s in per_sub for v in s["latencies"]]
        delivered_total += len(lat)
        rates = [
            round(len(s["latencies"]) / (s["last"] - s["first"]))
            for s in per_sub
            if s["first"] is not None and s["last"] is not None and s["last"] > s["first"]
        ]
        summary["phases"][phase] = {
            "events": sent["events"],
            "publish_s": round(sent["seconds"], 3),
            "publish_events_per_s": round(sent["events"] / sent["seconds"]) if sent["seconds"] else None,
            "publisher_cpu_s": round(sent["publisher_cpu_s"], 3),
            "delivered_share": round(len(lat) / (sent["events"] * args.subscribers), 4),
            "receive_events_per_s_per_subscriber": min(rates) if rates else None,
            "latency_ms": {
                "p50": ms(percentile(lat, 0.50)),
                "p99": ms(percentile(lat, 0.99)),
                "max": ms(max(lat) if lat else None),
            },
        }
    summary["publisher_cpu_s"] = round(publisher_cpu, 3)
    if delivered_total:
        # Over all phases; the subscribers' figure covers the whole run (it includes their idle waits).
        summary["cpu_ms_per_1000_delivered"] = {
            "server": round(server_cpu / delivered_total * 1e6, 2),
            "publisher": round(publisher_cpu / delivered_total * 1e6, 2),
            "subscribers": round(summary["subscribers_cpu_s"] / delivered_total * 1e6, 2),
        }
    return summary


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--subscriber":
        backend, target, out, *topics = sys.argv[2:]
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        Path(out).write_text(json.dumps(asyncio.run(subscriber(backend, target, topics))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="default: all three")
    parser.add_argument("--subscribers", type=int, default=4, help="subscriber processes (K API processes)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the paced phase")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s of the paced phase")
    parser.add_argument("--batch", type=int, default=20, help="events per publish_many call")
    parser.add_argument("--burst", type=int, default=50_000, help="events of the burst phase")
    parser.add_argument("--single", type=int, default=2_000, help="events of the single-publish phase")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12"))
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    add_quick_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.duration, args.rate, args.burst, args.single = 2, 2.0, 1000.0, 5_000, 200

    report = BenchReport(
        "bus",
        quick=args.quick,
        results_dir=args.output_dir,
        parameters={
            "subscribers": args.subscribers,
            "paced_rate_events_per_s": args.rate,
            "paced_duration_s": args.duration,
            "batch": args.batch,
            "burst_events": args.burst,
            "single_events": args.single,
            "payload_bytes": len(json.dumps({**SAMPLE, "seq": 1, "t": time.monotonic()})),
            "database": "BENCH_DATABASE_URL" if args.database_url else "embedded",
        },
    )
    results: dict[str, Any] = {"backends": {}}
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-bus-"))
    embedded = None
    try:
        owner_dsn = args.database_url
        if owner_dsn is None:
            from fleet.db.embedded import EmbeddedPostgres

            embedded = EmbeddedPostgres(workdir / "pg")
            owner_dsn = embedded.start()

        async def migrate() -> None:
            db = Database(Settings(database_url=owner_dsn))
            await db.start(pool=False)
            await db.close()

        asyncio.run(migrate())  # creates the fleet_app role the PostgreSQL bus connects as
        report.set_postgres_version(owner_dsn)
        targets = {"postgres": owner_dsn, "redis": args.redis_url, "nats": args.nats_url}
        for backend in args.backend or BACKENDS:
            try:
                results["backends"][backend] = run_backend(backend, targets[backend], args, workdir)
            except Exception as err:  # a server that is not running: say so, measure the others
                results["backends"][backend] = {"failed": f"{type(err).__name__}: {err}"}
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
