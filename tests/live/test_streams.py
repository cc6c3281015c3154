"""The WebSocket streams against a real server: trackers through ingestion and the bus, tenancy, tokens,
heartbeats, client messages and a client that does not read."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime

import pytest

from fleet.auth import tokens
from fleet.config import Settings
from fleet.db import Database
from fleet.live.hub import LiveHub
from fleet.protocol.navtelecom import event as event_frame
from fleet.protocol.navtelecom.flex import ack_archive, ack_event
from tests.api.conftest import Account, make_account, make_fleet
from tests.ingest.conftest import Tracker, archive_frame, record
from tests.live.conftest import LiveWsServer, ws_client

TIME0 = int(datetime.now(UTC).timestamp()) - 3600  # record times within the last hour


def vehicle_url(server: LiveWsServer, vehicle_id: int, token: str | None = None) -> str:
    query = f"?token={token}" if token else ""
    return f"{server.ws_url}/ws/vehicles/{vehicle_id}/live{query}"


def fleet_url(server: LiveWsServer, token: str | None = None) -> str:
    return f"{server.ws_url}/ws/fleet" + (f"?token={token}" if token else "")


def is_type(kind: str, vehicle_id: int | None = None) -> object:
    return lambda m: m["type"] == kind and (vehicle_id is None or m.get("vehicle_id") == vehicle_id)


async def test_tracker_positions_and_events_arrive_after_their_commit(
    live_server: LiveWsServer, db: Database, owner: Account, ingest_port: int
) -> None:
    fleet = await make_fleet(db, owner)
    async with (
        ws_client(vehicle_url(live_server, fleet.vehicle_id, owner.token)) as viewer,
        ws_client(fleet_url(live_server, owner.token)) as fleet_viewer,
    ):
        hello = await viewer.wait_for(is_type("hello"))
        assert hello["vehicle_id"] == fleet.vehicle_id and hello["sources"] == ["tracker"]
        assert (
            hello["status"]["state"] == "unknown" and hello["last_position"] is None and hello["values"] == []
        )
        assert hello["heartbeat_sec"] == 25
        assert (await fleet_viewer.wait_for(is_type("hello")))["vehicles"] == 1

        tracker = await Tracker.connect(ingest_port)
        try:
            await tracker.login(fleet.imei)
            await tracker.send(archive_frame(1, 3, time0=TIME0))
            assert await tracker.read(4) == ack_archive(3)  # the ACK means: committed
            # Generous patience here; the latency itself is measured by bench/bench_live.py.
            position = await viewer.wait_for(is_type("position"), within=5)
            assert position["device_id"] == fleet.device_id and position["source"] == "tracker"
            assert position["time"] == datetime.fromtimestamp(TIME0 + 3, UTC).isoformat().replace(
                "+00:00", "Z"
            )
            assert position["latitude"] == pytest.approx(55.75 + 3e-4, abs=1e-6) and position["speed"] == 42.5
            assert position["valid"] is True and position["satellites"] == 9 and position["committed_at"]
            status = await viewer.wait_for(is_type("status"), within=5)
            assert status["state"] == "online" and status["reason"] is None and status["last_activity_at"]
            on_fleet = await fleet_viewer.wait_for(is_type("position", fleet.vehicle_id), within=5)
            assert on_fleet["time"] == position["time"]
            await fleet_viewer.wait_for(lambda m: m["type"] == "status" and m["state"] == "online", within=5)

            # An out-of-turn alarm (~T): stored as an event, then an `event` and an `alarm` message.
            await tracker.send(event_frame(41, record(10, time0=TIME0)))
            assert await tracker.read(len(ack_event(41))) == ack_event(41)
            event = await viewer.wait_for(is_type("event"), within=5)
            assert event["kind"] == "alarm" and event["device_id"] == fleet.device_id
            assert (
                event["latitude"] == pytest.approx(55.751, abs=1e-6) and event["details"]["event_index"] == 41
            )
            alarm = await viewer.wait_for(is_type("alarm"), within=5)
            assert alarm["source"] == "tracker" and alarm["active"] is True and alarm["time"] == event["time"]
        finally:
            await tracker.close()
        assert not fleet_viewer.of_type("event")  # the fleet stream carries positions and statuses only


async def test_owners_see_only_their_own_vehicles(
    live_server: LiveWsServer,
    db: Database,
    owner: Account,
    other_owner: Account,
    admin_account: Account,
    hub: LiveHub,
) -> None:
    fleet = await make_fleet(db, owner)
    async with ws_client(vehicle_url(live_server, fleet.vehicle_id, other_owner.token)) as intruder:
        assert await intruder.wait_closed() == (4403, "forbidden")
        assert intruder.messages == [
            {
                "type": "error",
                "code": "forbidden",
                "message": f"vehicle {fleet.vehicle_id} is not yours to watch",
            }
        ]
    async with ws_client(vehicle_url(live_server, 10**12, other_owner.token)) as guess:
        assert (await guess.wait_closed())[0] == 4403  # the same answer: existence is not revealed
    async with ws_client(vehicle_url(live_server, 10**12, admin_account.token)) as admin:
        assert (await admin.wait_closed())[0] == 4404

    async with (
        ws_client(fleet_url(live_server, owner.token)) as mine,
        ws_client(fleet_url(live_server, other_owner.token)) as theirs,
        ws_client(fleet_url(live_server, admin_account.token)) as everything,
    ):
        assert (await theirs.wait_for(is_type("hello")))["vehicles"] == 0
        await mine.wait_for(is_type("hello"))
        await everything.wait_for(is_type("hello"))
        for number in range(3):
            hub._on_positions(
                {
                    "vehicle_id": fleet.vehicle_id,
                    "device_id": fleet.device_id,
                    "time": datetime.fromtimestamp(TIME0 + 100 + number, UTC).isoformat(),
                    "latitude": 50.0,
                    "longitude": 30.0,
                    "committed_at": datetime.now(UTC).timestamp(),
                }
            )
        await mine.wait_for(is_type("position", fleet.vehicle_id))
        await everything.wait_for(is_type("position", fleet.vehicle_id))
        await asyncio.sleep(1.5)  # the throttled newest position has gone out by now
        assert not [m for m in theirs.messages if m.get("vehicle_id") == fleet.vehicle_id]
        positions = mine.of_type("position")
        # Coalesced: the first at once, the newest when its second is over; never more than one a second.
        assert [p["time"][-9:] for p in positions] == [positions[0]["time"][-9:], positions[-1]["time"][-9:]]
        assert positions[-1]["time"].endswith(datetime.fromtimestamp(TIME0 + 102, UTC).strftime("%H:%M:%SZ"))


async def test_access_changes_while_connected(
    live_server: LiveWsServer, db: Database, owner: Account, live_settings: Settings
) -> None:
    fleet = await make_fleet(db, owner)
    second = await make_fleet(db, owner)
    async with (
        ws_client(vehicle_url(live_server, fleet.vehicle_id, owner.token)) as viewer,
        ws_client(fleet_url(live_server, owner.token)) as fleet_viewer,
    ):
        await viewer.wait_for(is_type("hello"))
        assert (await fleet_viewer.wait_for(is_type("hello")))["vehicles"] == 2
        async with db.system() as conn:
            await conn.execute(
                "DELETE FROM vehicle_access WHERE user_id = $1 AND vehicle_id = $2",
                owner.id,
                fleet.vehicle_id,
            )
        assert await viewer.wait_closed() == (4403, "forbidden")
        assert viewer.messages[-1]["message"] == "access to this vehicle was withdrawn"
        # The account itself: blocked while watching.
        async with db.system() as conn:
            await conn.execute("UPDATE users SET status = 'blocked' WHERE id = $1", owner.id)
        assert await fleet_viewer.wait_closed() == (4403, "account_blocked")
    del second


async def test_tokens_bad_expired_in_the_first_message_and_refreshed(
    live_server: LiveWsServer, db: Database, live_settings: Settings, hub: LiveHub
) -> None:
    account = await make_account(db, live_settings, role="owner")
    fleet = await make_fleet(db, account)
    async with ws_client(fleet_url(live_server, "not-a-token")) as bad:
        assert await bad.wait_closed() == (4401, "invalid_token")
    secret = live_settings.secret_key.get_secret_value()  # type: ignore[union-attr]

    def token(ttl: int, now: float | None = None) -> str:
        value, _ = tokens.issue_access_token(
            secret,
            user_id=account.id,
            role="owner",
            token_version=0,
            session_id=account.session_id,
            ttl_sec=ttl,
            now=now,
        )
        return value

    async with ws_client(
        fleet_url(live_server, token(60, now=datetime.now(UTC).timestamp() - 3600))
    ) as expired:
        assert await expired.wait_closed() == (4401, "token_expired")
    async with ws_client(fleet_url(live_server)) as silent:  # no token and no auth message
        assert await silent.wait_closed(within=10) == (4401, "unauthorized")
    async with ws_client(vehicle_url(live_server, fleet.vehicle_id)) as first_message:
        await first_message.send({"type": "auth", "token": account.token})
        assert (await first_message.wait_for(is_type("hello")))["vehicle_id"] == fleet.vehicle_id

    # A token that runs out while connected: told, then closed; a fresh one sent in time extends the session.
    async with (
        ws_client(fleet_url(live_server, token(2))) as lapsing,
        ws_client(fleet_url(live_server, token(2))) as extended,
    ):
        await lapsing.wait_for(is_type("hello"))
        await extended.wait_for(is_type("hello"))
        await extended.send({"type": "auth", "token": token(600)})
        ok = await extended.wait_for(is_type("auth_ok"))
        assert ok["expires_at"].endswith("Z")
        assert await lapsing.wait_closed(within=10) == (4401, "token_expired")
        assert lapsing.messages[-1]["code"] == "token_expired"
        await asyncio.sleep(1.5)
        assert extended.closed is None
        # A token of someone else is not a refresh.
        other = await make_account(db, live_settings, role="owner")
        await extended.send({"type": "auth", "token": other.token})
        assert await extended.wait_closed() == (4401, "unauthorized")

    pending = await make_account(db, live_settings, role="owner", status="pending")
    async with ws_client(fleet_url(live_server, pending.token)) as waiting:
        assert await waiting.wait_closed() == (4403, "pending_approval")


async def test_client_messages_and_heartbeats(
    live_server: LiveWsServer, owner: Account, hub: LiveHub, live_settings: Settings
) -> None:
    async with ws_client(fleet_url(live_server, owner.token)) as client:
        await client.wait_for(is_type("hello"))
        await client.send({"type": "ping"})
        await client.wait_for(is_type("pong"))
        hub.settings = live_settings.model_copy(update={"live_heartbeat_sec": 1.0})
        try:
            beat = await client.wait_for(is_type("heartbeat"), within=5)
        finally:
            hub.settings = live_settings
        assert beat["time"].endswith("Z")
        await client.ws.send("not json")
        assert await client.wait_closed() == (1008, "bad_message")


async def test_a_slow_viewer_gets_the_newest_within_a_bounded_queue(
    live_server: LiveWsServer, admin_account: Account, hub: LiveHub, live_settings: Settings
) -> None:
    """A client that stops reading costs at most LIVE_QUEUE_MAX messages; what it misses is counted."""
    from fleet.live import metrics

    dropped_before = metrics.DROP_COUNTERS["fleet"]._value.get()
    # The client library stops reading the socket once a few frames wait unread, and a small receive buffer
    # keeps the kernel from taking megabytes for it: the server's send soon waits, and its queue for this
    # viewer is all that could grow.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", live_server.port))
    sock.setblocking(False)
    async with (
        ws_client(
            fleet_url(live_server, admin_account.token), max_queue=1, sock=sock, close_timeout=0.5
        ) as slow,
        ws_client(fleet_url(live_server, admin_account.token)) as fast,
    ):
        await slow.wait_for(is_type("hello"))
        await fast.wait_for(is_type("hello"))
        slow._reader.cancel()  # nobody reads `slow` any more
        viewers = {v for v in hub.viewers() if v.identity.user_id == admin_account.id}
        vehicles = range(10**9, 10**9 + 20_000)  # distinct vehicles: nothing to coalesce
        for number, vehicle_id in enumerate(vehicles):
            hub._on_positions(
                {
                    "vehicle_id": vehicle_id,
                    "time": datetime.fromtimestamp(TIME0 + number, UTC).isoformat(),
                    "latitude": 1.0,
                    "longitude": 2.0,
                    "source": "pull",
                    "device_id": number,
                }
            )
            if number % 20 == 0:  # the fast viewer drains between bursts well below its queue's size
                await asyncio.sleep(0)
                for viewer in viewers:
                    assert viewer.queued <= live_settings.live_queue_max
        await fast.wait_for(lambda m: m.get("vehicle_id") == vehicles[-1], within=30)
        stuck = [v for v in viewers if v.dropped]
        assert len(stuck) == 1 and stuck[0].queued <= live_settings.live_queue_max
        assert metrics.DROP_COUNTERS["fleet"]._value.get() - dropped_before >= stuck[0].dropped > 1000
        assert all(v.dropped == 0 for v in viewers if v is not stuck[0])


async def test_tokens_in_urls_never_reach_the_logs(
    live_server: LiveWsServer, owner: Account, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    async with ws_client(fleet_url(live_server, owner.token)) as client:
        await client.wait_for(is_type("hello"))
    async with ws_client(fleet_url(live_server, "bogus-secret-token")) as refused:
        await refused.wait_closed()
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.error"]
    assert any("token=***" in line for line in lines), lines
    assert not any(owner.token in line or "bogus-secret-token" in line for line in lines)


async def test_metrics_are_exported(live_server: LiveWsServer, owner: Account) -> None:
    import httpx

    async with ws_client(fleet_url(live_server, owner.token)) as client:
        await client.wait_for(is_type("hello"))
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            text = (await http.get("/metrics")).text
    for name in (
        'fleet_ws_viewers{stream="fleet"}',
        'fleet_ws_messages_total{stream="fleet",type="hello"}',
        'fleet_ws_dropped_total{stream="vehicle"}',
        'fleet_ws_rejected_total{reason="unauthorized"}',
        "fleet_live_pollers",
        "fleet_live_poll_failures_total",
    ):
        assert name in text, name


async def test_device_command_updates_reach_the_vehicle_stream(
    live_server: LiveWsServer, db: Database, owner: Account, hub: LiveHub
) -> None:
    """Bus topic `commands` (device commands, fleet.device_commands.bus_payload) → `command` messages."""
    fleet = await make_fleet(db, owner)
    async with ws_client(vehicle_url(live_server, fleet.vehicle_id, owner.token)) as viewer:
        await viewer.wait_for(is_type("hello"))
        assert hub.bus is not None
        await hub.bus.publish(
            "commands",
            {
                "type": "command",
                "command_id": 42,
                "device_id": fleet.device_id,
                "vehicle_id": fleet.vehicle_id,
                "status": "answered",
                "answer": "OK",
                "time": "2026-12-05T01:00:00Z",
            },
        )
        command = await viewer.wait_for(is_type("command"))
        assert (command["command_id"], command["status"], command["answer"]) == (42, "answered", "OK")
        assert command["device_id"] == fleet.device_id and command["time"] == "2026-12-05T01:00:00Z"


async def test_a_batched_fleet_viewer_gets_positions_together(
    live_server: LiveWsServer, db: Database, owner: Account, hub: LiveHub
) -> None:
    """`/ws/fleet?batch=1`: the vehicles' positions (still one per vehicle per second) in one message."""
    fleets = [await make_fleet(db, owner) for _ in range(3)]
    async with ws_client(fleet_url(live_server, owner.token) + "&batch=1") as viewer:
        hello = await viewer.wait_for(is_type("hello"))
        assert hello["batch_sec"] == 0.25 and hello["vehicles"] == 3
        now = datetime.now(UTC).timestamp()
        for number, fleet in enumerate(fleets):
            hub._on_positions(
                {
                    "vehicle_id": fleet.vehicle_id,
                    "device_id": fleet.device_id,
                    "time": datetime.fromtimestamp(TIME0 + 500 + number, UTC).isoformat(),
                    "latitude": 50.0 + number,
                    "longitude": 30.0,
                    "committed_at": now,
                }
            )
        batch = await viewer.wait_for(is_type("positions"))
        items = {item["vehicle_id"]: item for item in batch["items"]}
        assert set(items) == {fleet.vehicle_id for fleet in fleets}
        assert all(item["type"] == "position" for item in items.values())
        assert items[fleets[2].vehicle_id]["latitude"] == 52.0
        assert not viewer.of_type("position")  # never one by one
