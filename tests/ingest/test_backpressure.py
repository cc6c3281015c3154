"""Backpressure with a real server process: a flood while the database is blocked keeps memory bounded,
reading pauses once per episode, and everything flows again when the database returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import pytest

from .conftest import Driver, ServerProcess, Tracker, unique_imei

pytestmark = pytest.mark.slow

FLOOD_CONNECTIONS = 60
FLOOD_SECONDS = 4.0
# Frames a flooding client pushes at most: several times what the server lets one connection hold.
FLOOD_FRAMES = 150
MAX_RSS_GROWTH = 80 * 1024 * 1024


async def test_flood_with_blocked_database_keeps_rss_bounded(
    owner_conn: asyncpg.Connection, server_process: Callable[..., ServerProcess], proto: Driver
) -> None:
    server = server_process(protocol=proto.name, INGEST_QUEUE_HIGH_WATER="2000", INGEST_QUEUE_LOW_WATER="500")
    server.start()
    # Warm up: partitions and the code paths exist before measuring.
    warm = await Tracker.connect(server.port)
    await proto.login(warm, unique_imei())
    await warm.send(proto.frame(1, 10))
    assert await warm.read(4) == proto.ack(10)
    await warm.close()
    baseline = server.rss_bytes()

    floods = [await Tracker.connect(server.port) for _ in range(FLOOD_CONNECTIONS)]
    imeis = [unique_imei() for _ in floods]
    for tracker, imei in zip(floods, imeis, strict=True):
        await proto.login(tracker, imei)
    sent = [0] * FLOOD_CONNECTIONS

    async def flood(number: int) -> None:
        tracker = floods[number]
        with contextlib.suppress(ConnectionError, OSError):
            for frame in range(FLOOD_FRAMES):
                await tracker.send(proto.frame(1 + frame * 10, 10))
                sent[number] += 1

    transaction = owner_conn.transaction()
    await transaction.start()
    peak = baseline
    try:
        await owner_conn.execute("LOCK TABLE positions IN ACCESS EXCLUSIVE MODE")
        tasks = [asyncio.create_task(flood(n)) for n in range(FLOOD_CONNECTIONS)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLOOD_SECONDS
        while loop.time() < deadline:
            peak = max(peak, server.rss_bytes())
            await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        peak = max(peak, server.rss_bytes())
    finally:
        await transaction.rollback()

    offered = sum(sent)
    assert offered > FLOOD_CONNECTIONS * 32, "the flood did not push past the per-connection limit"
    print(f"flood: {offered} frames offered, RSS {baseline / 2**20:.1f} -> peak {peak / 2**20:.1f} MiB")
    assert peak - baseline < MAX_RSS_GROWTH, f"RSS grew {(peak - baseline) / 2**20:.1f} MiB"

    # Every frame the server took in is now committed and acknowledged, in order.
    acked = 0
    for tracker, count in zip(floods, sent, strict=True):
        for _ in range(count):
            try:
                assert await tracker.read(4, within=20) == proto.ack(10)
            except (TimeoutError, asyncio.IncompleteReadError):
                break  # frames still in the socket when the flood stopped are read later or never
            acked += 1
        await tracker.close()
    assert acked > 0

    events: list[str] = []
    for _ in range(50):  # an episode is closed after a quiet second
        events = [e["event"] for e in server.log_events()]
        if events.count("ingest_backpressure_on") == events.count("ingest_backpressure_off"):
            break
        await asyncio.sleep(0.1)
    assert events.count("ingest_backpressure_on") >= 1
    assert events.count("ingest_backpressure_on") == events.count("ingest_backpressure_off")
    assert events.count("ingest_backpressure_on") <= 5, (
        "backpressure must be logged per episode, not per frame"
    )

    rows = await owner_conn.fetchval(
        "SELECT count(*) FROM positions p JOIN devices d ON d.id = p.device_id WHERE d.imei = ANY($1)", imeis
    )
    assert rows >= acked * 10
    # The server is healthy afterwards.
    after = await Tracker.connect(server.port)
    await proto.login(after, unique_imei())
    await after.send(proto.frame(1, 1))
    assert await after.read(4) == proto.ack(1)
    await after.close()
