#!/usr/bin/env python3
"""The API's own CPU per `GET /vehicles`, in process: the ASGI app called directly, one request at a time.

    .venv/bin/python bench/profile_api.py [--requests 1500] [--rounds 7] [--path /vehicles]

A private embedded PostgreSQL seeded as `make bench-api` seeds it (tools/perf_sanity.py), the API app with its
lifespan in this process, a signed-in superuser; then `--rounds` rounds of `--requests` sequential requests
through the ASGI interface (no sockets, no HTTP parsing), each round timed with `time.process_time()`: the
CPU of this process only; the PostgreSQL backends' CPU is read from /proc (10 ms ticks) for each round.
Prints the µs per request of every round and the best one (the least disturbed by the other processes on
the machine). `--profile` writes a cProfile (CPU time) of one extra round to the given file.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import perf_sanity  # noqa: E402


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    status = 0
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if done:
            await asyncio.sleep(3600)
        done = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return status


async def main(args: argparse.Namespace) -> None:

    from fleet.api.app import create_app
    from fleet.config import Settings, finalize_secrets
    from fleet.logging import configure_logging
    from fleet.runtime import gc_tuned_for_serving

    server = perf_sanity.SpawnedServer(Path(os.devnull))
    try:
        owner_dsn = await server.start_database()
        day_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        seeded = await perf_sanity.seed(owner_dsn, args.vehicles, day_start)
        settings = finalize_secrets(
            Settings(
                env="development",
                data_dir=server.dir,
                database_url=owner_dsn,
                db_app_password=server.app_password,
                db_migrate_on_start=False,
                log_level="WARNING",
                rate_limit_api_per_minute=10_000_000,
                rate_limit_login_per_minute=1000,
            )
        )
        configure_logging(settings.log_level, "json", None)
        app = create_app(settings)
        with gc_tuned_for_serving():
            await measure(app, seeded, args, server.meter())
    finally:
        await server.stop()


async def measure(app: Any, seeded: dict[str, Any], args: argparse.Namespace, meter: Any) -> None:
    import httpx

    import fleet

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            token = await perf_sanity.sign_in(client, seeded["email"], perf_sanity.PASSWORD)
        headers = [(b"host", b"test"), (b"authorization", f"Bearer {token}".encode())]
        for _ in range(200):  # warm up: prepared statements, caches
            assert await call(app, args.path, headers) == 200
        per_request, db_per_request = [], []
        for _ in range(args.rounds):
            db_before = meter.snapshot()
            started = time.process_time()
            for _ in range(args.requests):
                await call(app, args.path, headers)
            per_request.append((time.process_time() - started) / args.requests * 1e6)
            db = meter.per_request(db_before, meter.snapshot(), args.requests)["db_cpu_ms_per_request"]
            db_per_request.append(db * 1000)
        if args.profile:
            profiler = cProfile.Profile(time.process_time)  # CPU only: waits on PostgreSQL are not counted
            profiler.enable()
            for _ in range(args.requests):
                await call(app, args.path, headers)
            profiler.disable()
            profiler.dump_stats(args.profile)
    print(
        f"{Path(fleet.__file__).parent.parent.name} {args.path}: API CPU per request (µs), "
        f"{args.rounds} rounds of {args.requests}: {' '.join(f'{v:.0f}' for v in per_request)}; "
        f"best {min(per_request):.0f}; PostgreSQL backends' CPU per request (µs): "
        f"{' '.join(f'{v:.0f}' for v in db_per_request)}; best {min(db_per_request):.0f}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--path", default="/vehicles")
    parser.add_argument("--profile", default=None, help="write a cProfile of one more round here")
    try:
        import uvloop

        uvloop.run(main(parser.parse_args()))
    except ImportError:
        asyncio.run(main(parser.parse_args()))
