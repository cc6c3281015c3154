"""Misbehaving vehicles: their answers are refused or filtered, the cycle and the other vehicles carry on."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from fleet.db import Database
from fleet.sync import vehicle as vehicle_module
from fleet.sync.parse import format_time, parse_time
from fleet.sync.service import SyncService
from tests.sync.conftest import DEFAULT_KEY, VehicleFactory, journal, measurement_count, vehicle_row
from tests.sync.doubles import FakeClock, FakeVehicle, Reply, json_reply, serve, serve_many


def _raw(body: bytes, status: int = 200, **headers: str) -> Callable[[dict[str, str]], Any]:
    async def handler(query: dict[str, str]) -> Reply:
        return status, body, {"content-type": "application/json", **headers}

    return handler


def _streamed(chunk: bytes, count: int, pause: float = 0.0) -> Callable[[dict[str, str]], Any]:
    async def handler(query: dict[str, str]) -> Reply:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(count):
                if pause:
                    await asyncio.sleep(pause)
                yield chunk

        return 200, body(), {"content-type": "application/json"}

    return handler


def _page(vehicle: FakeVehicle, edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, str]], Any]:
    async def handler(query: dict[str, str]) -> Reply:
        page = vehicle.data_page(query)
        edit(page)
        return json_reply(page)

    return handler


def _garbage_rows(page: dict[str, Any]) -> None:
    """Keep the real rows and add every kind of bad row after them."""
    start = parse_time(page["from"])
    end = parse_time(page["to"])
    assert start is not None and end is not None
    inside = format_time(start + (end - start) / 2)
    page["rows"] += [
        {"channel_id": "1", "time": inside, "value": 1.0},  # id as text
        {"channel_id": True, "time": inside, "value": 1.0},  # bool is not an id
        {"channel_id": 1, "time": inside, "value": "12.5"},  # value as text
        {"channel_id": 1, "time": inside, "value": None},
        {"channel_id": 1, "time": inside, "value": float("nan")},  # json.dumps writes NaN
        {"channel_id": 2, "time": inside, "value": float("inf")},  # ... and Infinity
        {"channel_id": 1, "time": inside, "value": 10**400},  # no float holds it
        {"channel_id": 1, "time": 1_700_000_000, "value": 1.0},  # epoch number, not contract text
        {"channel_id": 1, "time": "yesterday", "value": 1.0},
        {"channel_id": 1, "time": ["2026"], "value": 1.0},
        {"channel_id": 1, "time": format_time(end + timedelta(days=400)), "value": 1.0},  # future
        {"channel_id": 1, "time": "1999-12-31T23:59:59.000Z", "value": 1.0},  # before 2000
        {"channel_id": 2, "time": format_time(start - timedelta(seconds=1)), "value": 1.0},  # outside window
        {"channel_id": 77, "time": inside, "value": 1.0},  # not in /channels
        {"channel_id": 2**40, "time": inside, "value": 1.0},  # not even an integer column
        ["1", inside, 1.0],
        "row",
    ]


@dataclass
class Case:
    name: str
    vehicle: FakeVehicle
    status: str  # expected journal status
    note: str | None  # expected fragment of the journal note
    rows_stored: bool  # whether the good rows are kept
    cursor_moves: bool


def _cases() -> list[Case]:
    cases: list[Case] = []

    def case(name: str, status: str, note: str | None, rows: bool, moves: bool) -> FakeVehicle:
        vehicle = FakeVehicle(api_key=DEFAULT_KEY)
        cases.append(Case(name, vehicle, status, note, rows, moves))
        return vehicle

    case("healthy", "ok", None, True, True)
    huge = case("huge streamed body", "error", "byte cap", False, False)
    huge.overrides["/data"] = _streamed(b" " * 65536, 64)  # 4 MiB, no Content-Length
    declared = case("huge declared body", "error", "byte cap", False, False)
    declared.overrides["/data"] = _raw(b"{}", **{"content-length": str(10**12)})
    bomb = case("gzip bomb", "error", "byte cap", False, False)
    bomb.overrides["/data"] = _raw(gzip.compress(b" " * (8 * 2**20)), **{"content-encoding": "gzip"})
    malformed = case("malformed JSON", "error", "not valid JSON", False, False)
    malformed.overrides["/data"] = _raw(b'{"rows": [{"channel_id": 1,')
    deep = case("deeply nested JSON", "error", "not valid JSON", False, False)
    deep.overrides["/data"] = _raw(b"[" * 200_000 + b"]" * 200_000)
    wrong_shape = case("rows not a list", "error", "'rows' is not a list", False, False)
    wrong_shape.overrides["/data"] = _page(wrong_shape, lambda p: p.update(rows={"1": 2}))
    not_object = case("array instead of object", "error", "expected a JSON object", False, False)
    not_object.overrides["/data"] = _raw(b"[1, 2, 3]")
    lying_end = case("window end in the future", "error", "outside the window", False, False)
    lying_end.overrides["/data"] = _page(lying_end, lambda p: p.update(to="2999-01-01T00:00:00.000Z"))
    bad_flag = case("truncated not a boolean", "error", "'truncated' is not a boolean", False, False)
    bad_flag.overrides["/data"] = _page(bad_flag, lambda p: p.update(truncated="yes"))
    garbage = case("garbage rows", "ok", "rejected 17", True, True)
    garbage.overrides["/data"] = _page(garbage, _garbage_rows)
    status = case("status not JSON", "error", "not valid JSON", False, False)
    status.overrides["/status"] = _raw(b"<html>router login</html>")
    drip = case("slow drip", "timeout", "no complete answer", False, False)
    drip.overrides["/data"] = _streamed(b" ", 100, pause=0.2)
    server_error = case("HTTP 500 on data", "error", "HTTP 500", False, False)
    server_error.overrides["/data"] = _raw(
        json.dumps({"error": {"code": "boom", "message": "db"}}).encode(), 500
    )
    alarms = case("alarms garbage", "ok", "alarms: the body is not valid JSON", True, True)
    alarms.overrides["/alarms"] = _raw(b"nope")
    return cases


async def test_hostile_answers_are_refused_and_other_vehicles_are_unaffected(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    cases = _cases()
    async with serve_many([case.vehicle for case in cases]) as ports:
        ids = {case.name: await make_vehicle(port) for case, port in zip(cases, ports, strict=True)}
        async with service_factory(now=clock) as service:
            report = await service.run_cycle(only=list(ids.values()))
    outcome = {v.vehicle_id: v for v in report.vehicles}
    assert len(outcome) == len(cases)
    for case in cases:
        vehicle_id = ids[case.name]
        (entry,) = await journal(db, vehicle_id)
        assert (case.name, entry["status"]) == (case.name, case.status), entry["error"]
        if case.note is None:
            assert entry["error"] is None, case.name
        else:
            assert case.note in (entry["error"] or ""), (case.name, entry["error"])
        stored = await measurement_count(db, vehicle_id)
        assert (case.name, stored) == (case.name, 18 if case.rows_stored else 0)
        row = await vehicle_row(db, vehicle_id)
        assert (case.name, row["last_sync_at"] == clock()) == (case.name, case.cursor_moves)
        assert row["sync_lease_owner"] is None, case.name

    garbage = outcome[ids["garbage rows"]]
    assert garbage.rows_rejected == 17
    for reason in (
        "wrong_type 6",
        "not_finite 3",
        "bad_time 3",
        "future_time 1",
        "before_2000 1",
        "outside_window 1",
        "unknown_channel 2",
    ):
        assert reason in (garbage.note or ""), reason
    alarms_row = await vehicle_row(db, ids["alarms garbage"])
    # The failed alarm range is pinned (not left to the data cursor, which moved on): asked for again.
    assert alarms_row["alarms_synced_at"] == clock() - timedelta(seconds=60)


async def test_channels_failing_falls_back_to_the_stored_list(
    db: Database, make_vehicle: VehicleFactory, service_factory: Callable[..., SyncService]
) -> None:
    clock = FakeClock()
    vehicle = FakeVehicle(api_key=DEFAULT_KEY)
    async with serve(vehicle) as port, service_factory(now=clock) as service:
        vehicle_id = await make_vehicle(port)
        vehicle.overrides["/channels"] = _raw(b"{", 200)
        report = await service.run_cycle(only=[vehicle_id])
        # Never seen a channel list: not fatal, the rows are stored with their ids only range-checked.
        assert report.vehicles[0].status == "ok"
        assert "no channel list yet" in (report.vehicles[0].note or "")
        assert report.vehicles[0].rows_written == 18

        del vehicle.overrides["/channels"]
        clock.advance(30)
        assert (await service.run_cycle(only=[vehicle_id], force=True)).vehicles[0].status == "ok"

        vehicle.overrides["/channels"] = _raw(b"{", 200)
        clock.advance(30)
        report = await service.run_cycle(only=[vehicle_id], force=True)
    assert report.vehicles[0].status == "ok"
    assert "using stored channels" in (report.vehicles[0].note or "")
    assert report.vehicles[0].rows_written == 9


async def test_endless_paging_stops_at_the_request_budget(
    db: Database,
    make_vehicle: VehicleFactory,
    service_factory: Callable[..., SyncService],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vehicle_module, "MAX_REQUESTS_PER_PULL", 20)
    clock = FakeClock()
    vehicle = FakeVehicle(api_key=DEFAULT_KEY)

    async def one_row_pages(query: dict[str, str]) -> Reply:
        # Always "truncated", always one more millisecond: an agent that would keep a worker forever.
        start = parse_time(query["from"])
        assert start is not None
        return json_reply(
            {
                "from": query["from"],
                "to": query["to"],
                "rows": [{"channel_id": 1, "time": query["from"], "value": 1.0}],
                "truncated": True,
                "next_from": format_time(start + timedelta(milliseconds=1)),
            }
        )

    vehicle.overrides["/data"] = one_row_pages
    async with serve(vehicle) as port, service_factory(now=clock) as service:
        vehicle_id = await make_vehicle(port)
        report = await service.run_cycle(only=[vehicle_id])
    assert vehicle.count("/data") == 20
    assert report.vehicles[0].status == "ok"
    assert "stopped after 20 requests" in (report.vehicles[0].note or "")
    # The progress made is kept; the next cycle goes on from there.
    first = clock() - timedelta(seconds=60)
    assert (await vehicle_row(db, vehicle_id))["last_sync_at"] == first + timedelta(milliseconds=20)
    assert await measurement_count(db, vehicle_id) == 20
