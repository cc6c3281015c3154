"""Does the time of a failed sign-in (or of a registration) tell anything about the account? Prints JSON.

Issue 15 measured 3.7 ms for a wrong password on a Google-only account against 264 ms on a password account:
anyone could tell which e-mails exist and how they sign in. This check measures it statistically, many tries
per kind, interleaved in random order so that drift (other work on the machine) spreads over every kind.

Set-up, all on this machine: a private embedded PostgreSQL (or ``BENCH_DATABASE_URL``), migrated; the API
served by uvicorn on 127.0.0.1 exactly as ``fleet serve`` configures it; accounts of every kind. Each try is
one HTTP request from a client in the same process, timed from send to full answer.

Kinds compared, all with a wrong password (the reference is the active password account):

* ``password_active`` (reference), ``password_pending``, ``password_blocked``;
* ``google_only`` (no password hash), ``unknown_email``;
* registration of a new address against registration of an address that already has an account.

Reported per kind: median, p10, p90, mean and standard deviation (ms); against the reference: the difference of
medians with a bootstrap 95 % confidence interval, and the two-sided Mann-Whitney U test's p-value (normal
approximation). ``indistinguishable`` is true when the interval holds 0 and p >= 0.01 (no detectable
difference); ``old_gap_excluded`` when the whole interval is smaller than the difference the old code made
(``old_gap_ms``: the reference median less ``old_google_only_check_ms``, the old Google-only path that ran no
bcrypt at all). On a busy machine the intervals are wide; the samples are kept in ``samples_ms``. Machine,
load and versions are recorded.

Usage: ``python bench/bench_login_timing.py [--tries 60] [--register-tries 30] [--seed 7] [--output FILE] [--quick]``;
results in ``bench/results/login_timing.json`` (``bench/common.py``); ``--quick``: 5 and 2 tries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="fleet-xdg-"))

import httpx
import structlog
import uvicorn

from bench.common import BenchReport, add_quick_argument, cpu_model, postgres_version_async
from fleet.api.app import create_app
from fleet.api.server import server_config
from fleet.config import Settings
from fleet.db import Database
from fleet.db.embedded import EmbeddedPostgres
from fleet.db.queries.users import create_user
from fleet.passwords import hash_password, verify_password
from fleet.runtime import Runtime

PASSWORD = "the real password 2026"
WRONG = "not the password at all"
LOAD_AT_START = round(os.getloadavg()[0], 2)
REFERENCE = "password_active"


# --- statistics ------------------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 2),
        "p10_ms": round(pct(0.10), 2),
        "p90_ms": round(pct(0.90), 2),
        "mean_ms": round(statistics.fmean(values), 2),
        "stdev_ms": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
    }


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test, normal approximation with tie correction."""
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    n1, n2 = len(a), len(b)
    r1 = sum(r for r, (_, group) in zip(ranks, pooled, strict=True) if group == 0)
    u = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    if sigma == 0:
        return 1.0
    z = (u - n1 * n2 / 2) / sigma
    return math.erfc(abs(z) / math.sqrt(2))


def bootstrap_median_diff(
    a: list[float], b: list[float], rng: random.Random, rounds: int = 2000
) -> list[float]:
    diffs = sorted(
        statistics.median(rng.choices(b, k=len(b))) - statistics.median(rng.choices(a, k=len(a)))
        for _ in range(rounds)
    )
    return [round(diffs[int(0.025 * rounds)], 2), round(diffs[int(0.975 * rounds)], 2)]


def compare(reference: list[float], other: list[float], rng: random.Random, gap: float) -> dict[str, Any]:
    """The other kind against the reference; `gap` is the difference the old code made (a whole bcrypt)."""
    diff = statistics.median(other) - statistics.median(reference)
    p = mann_whitney_p(reference, other)
    low, high = bootstrap_median_diff(reference, other, rng)
    return {
        "median_diff_ms": round(diff, 2),
        "median_diff_ci95_ms": [low, high],
        "mann_whitney_p": round(p, 4),
        # No detectable difference: the interval holds 0 and the rank test finds none.
        "indistinguishable": low <= 0 <= high and p >= 0.01,
        # Whatever difference noise hides, it is smaller than the one the old code made.
        "old_gap_excluded": max(abs(low), abs(high)) < gap,
    }


# --- the server ----------------------------------------------------------------------------------------------
class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the benchmark owns the process's signals
        yield


async def start_api(stack: AsyncExitStack, settings: Settings, db: Database) -> str:
    runtime = Runtime(settings=settings, db=db, roles=["api"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(
        server_config(create_app(settings, runtime=runtime), settings, host="127.0.0.1", port=port)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def stop() -> None:
        server.should_exit = True
        await task
        await runtime.cancel_tasks()

    stack.push_async_callback(stop)
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return f"http://127.0.0.1:{port}"


async def make_accounts(db: Database) -> dict[str, str]:
    hashed = await hash_password(PASSWORD)
    tag = uuid.uuid4().hex[:8]
    emails = {
        "password_active": (f"active-{tag}@example.com", hashed, "active"),
        "password_pending": (f"pending-{tag}@example.com", hashed, "pending"),
        "password_blocked": (f"blocked-{tag}@example.com", hashed, "blocked"),
        "google_only": (f"google-{tag}@example.com", None, "active"),
    }
    async with db.system() as conn:
        for email, password_hash, status in emails.values():
            await create_user(conn, email=email, password_hash=password_hash, status=status)
    accounts = {kind: email for kind, (email, _, _) in emails.items()}
    accounts["unknown_email"] = f"nobody-{tag}@example.com"
    return accounts


async def timed(client: httpx.AsyncClient, path: str, body: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    response = await client.post(path, json=body)
    return (time.perf_counter() - started) * 1000, response.status_code


async def measure(args: argparse.Namespace, settings: Settings, db: Database) -> dict[str, Any]:
    rng = random.Random(args.seed)
    async with AsyncExitStack() as stack:
        base = await start_api(stack, settings, db)
        accounts = await make_accounts(db)
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=30))
        for email in accounts.values():  # warm-up: connections, caches, first bcrypt
            await timed(client, "/auth/login", {"email": email, "password": WRONG})
        plan = [kind for kind in accounts for _ in range(args.tries)]
        rng.shuffle(plan)
        login: dict[str, list[float]] = {kind: [] for kind in accounts}
        statuses: dict[str, set[int]] = {kind: set() for kind in accounts}
        for kind in plan:
            ms, status = await timed(client, "/auth/login", {"email": accounts[kind], "password": WRONG})
            login[kind].append(ms)
            statuses[kind].add(status)

        register: dict[str, list[float]] = {"register_new": [], "register_existing": []}
        register_plan = [kind for kind in register for _ in range(args.register_tries)]
        rng.shuffle(register_plan)
        for kind in register_plan:
            email = (
                accounts["password_active"]
                if kind == "register_existing"
                else f"new-{uuid.uuid4().hex}@example.com"
            )
            ms, status = await timed(client, "/auth/register", {"email": email, "password": PASSWORD})
            assert status == 202, status
            register[kind].append(ms)

    old_path = []
    for _ in range(args.tries):  # what a Google-only account cost before: no hash, no bcrypt
        started = time.perf_counter()
        await verify_password(WRONG, None)
        old_path.append((time.perf_counter() - started) * 1000)

    old_cost = statistics.median(old_path)
    gap = statistics.median(login[REFERENCE]) - old_cost  # what a Google-only sign-in saved before the fix
    result: dict[str, Any] = {
        "login_wrong_password": {
            kind: {**summary(values), "statuses": sorted(statuses[kind])} for kind, values in login.items()
        },
        "login_vs_reference": {
            kind: compare(login[REFERENCE], values, rng, gap)
            for kind, values in login.items()
            if kind != REFERENCE
        },
        "registration": {kind: summary(values) for kind, values in register.items()},
        "registration_existing_vs_new": compare(
            register["register_new"],
            register["register_existing"],
            rng,
            statistics.median(register["register_new"]),
        ),
        "old_google_only_check_ms": round(old_cost, 3),
        "old_gap_ms": round(gap, 1),
        "samples_ms": {kind: [round(v, 2) for v in values] for kind, values in {**login, **register}.items()},
    }
    result["all_indistinguishable"] = all(
        c["indistinguishable"] for c in result["login_vs_reference"].values()
    )
    return result


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tries", type=int, default=60, help="failed sign-ins per account kind")
    parser.add_argument("--register-tries", type=int, default=30, help="registrations per kind")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    add_quick_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.tries, args.register_tries = 5, 2
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    report = BenchReport(
        "login_timing",
        quick=args.quick,
        parameters={"tries": args.tries, "register_tries": args.register_tries, "seed": args.seed},
    )

    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-login-"))
    embedded = None
    dsn = os.environ.get("BENCH_DATABASE_URL")
    if dsn is None:
        embedded = EmbeddedPostgres(workdir / "pg")
        dsn = embedded.start()
    settings = Settings(
        env="test",
        data_dir=workdir,
        database_url=dsn,
        secret_key=secrets.token_urlsafe(32),
        api_key=secrets.token_urlsafe(32),
        db_app_password=secrets.token_urlsafe(24),
        db_grafana_password=secrets.token_urlsafe(24),
        rate_limit_login_per_minute=1_000_000,
        rate_limit_register_per_hour=1_000_000,
    )
    db = Database(settings)
    await db.start(migrate_schema=True)
    report.set_postgres_version(await postgres_version_async(dsn))
    try:
        started = time.perf_counter()
        result = await measure(args, settings, db)
        result["duration_s"] = round(time.perf_counter() - started, 1)
    finally:
        await db.close()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "load_avg_1m_at_start": LOAD_AT_START,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    result["parameters"] = {"tries": args.tries, "register_tries": args.register_tries, "seed": args.seed}
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    samples = result["samples_ms"]
    for kind, values in samples.items():
        report.add_samples(f"{kind}_ms", values)
    report.add_baseline("password_active_median_ms", result["login_wrong_password"][REFERENCE]["median_ms"])
    for kind in samples:
        if kind in result["login_wrong_password"] and kind != REFERENCE:
            report.add_ratio(
                f"{kind}_to_password_active",
                report.stats[f"{kind}_ms"]["median"],
                report.stats[f"{REFERENCE}_ms"]["median"],
            )
    report.add_target("all_indistinguishable", 1.0 if result["all_indistinguishable"] else 0.0, 1.0)
    report.results = {k: v for k, v in result.items() if k != "samples_ms"}
    report.write()
    return 0 if report.targets_met() else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
