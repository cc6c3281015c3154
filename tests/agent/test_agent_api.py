"""The Outbound API contract end to end, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fleet.agent.config import AgentConfig
from fleet.agent.runtime import ConfigError
from fleet.agent.testing import AgentHandle, running_agent, running_agent_handle
from fleet.agent.times import format_time, now_ms, parse_time

from .conftest import API_KEY, SIM_BACKFILL_SECONDS, assert_error

ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
Clients = Callable[..., httpx.AsyncClient]

READ_REQUESTS = [
    ("GET", "/status", {}),
    ("GET", "/channels", {}),
    ("GET", "/data", {"from": "0"}),
    ("GET", "/data/latest", {}),
    ("GET", "/alarms", {"from": "0"}),
    ("POST", "/ingest", {}),
]


async def pull_all(client: httpx.AsyncClient, start: str, end: str, **params: Any) -> tuple[list[Any], int]:
    """Follow next_from from ``start`` to ``end``; return every row and the number of pages."""
    rows: list[Any] = []
    pages = 0
    cursor = start
    while True:
        response = await client.get("/data", params={"from": cursor, "to": end, **params})
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["count"] == len(page["rows"])
        rows.extend(page["rows"])
        pages += 1
        if not page["truncated"]:
            assert page["next_from"] is None
            return rows, pages
        assert parse_time(page["next_from"]) > parse_time(cursor)
        cursor = page["next_from"]


async def ingest(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/ingest", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def declare(*channel_ids: int) -> list[dict[str, Any]]:
    return [
        {"channel_id": cid, "name": f"ch{cid}", "unit": "V", "phys_min": 0, "phys_max": 100}
        for cid in channel_ids
    ]


# -- auth -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "params"), READ_REQUESTS)
async def test_missing_or_wrong_key_is_401(
    sim_agent: AgentHandle, method: str, path: str, params: dict
) -> None:
    async with httpx.AsyncClient(base_url=sim_agent.base_url) as client:
        assert_error(await client.request(method, path, params=params), 401, "unauthorized")
        for wrong in ("wrong", API_KEY[:-1], API_KEY + "x", API_KEY.upper(), ""):
            response = await client.request(method, path, params=params, headers={"X-API-Key": wrong})
            assert_error(response, 401, "unauthorized")


async def test_agent_without_a_key_refuses_to_build(make_config: Callable[..., AgentConfig]) -> None:
    with pytest.raises(ConfigError, match="API key"):
        async with running_agent(make_config(api_key=None)):
            pass


# -- status and channels ----------------------------------------------------------------------------------


async def test_status(sim_agent: AgentHandle, client_for: Clients) -> None:
    body = (await client_for(sim_agent).get("/status")).json()
    assert body["online"] is True and body["db_ok"] is True
    assert body["contract_version"] == "1.0"
    assert isinstance(body["software_version"], str) and body["software_version"]
    for key in ("time", "oldest_data", "newest_data"):
        assert ISO_MS_Z.fullmatch(body[key]), key
    assert abs(parse_time(body["time"]) - now_ms()) < 5000
    span = parse_time(body["newest_data"]) - parse_time(body["oldest_data"])
    assert span >= (SIM_BACKFILL_SECONDS - 1) * 1000
    assert body["vehicle_id"] is None and body["vehicle_name"] is None and body["simulated"] is True
    assert body["limits"] == {
        "row_limit": 50_000,
        "alarm_limit": 10_000,
        "max_window_seconds": 7 * 86_400,
        "settle_seconds": 2.0,
    }


async def test_channels(sim_agent: AgentHandle, client_for: Clients) -> None:
    channels = (await client_for(sim_agent).get("/channels")).json()["channels"]
    assert [c["channel_id"] for c in channels] == list(range(1, 26))
    for channel in channels:
        assert set(channel) == {"channel_id", "name", "unit", "phys_min", "phys_max"}
        assert channel["phys_min"] < channel["phys_max"]
    names = {c["name"] for c in channels}
    assert {"speed", "engine_rpm", "coolant_temp", "fuel_level", "latitude", "longitude"} <= names


# -- data windows -----------------------------------------------------------------------------------------


async def test_data_window_is_half_open(ingest_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(ingest_agent)
    base = (now_ms() - 600_000) // 1000 * 1000
    rows = [
        {"channel_id": ch, "time": format_time(base + s * 1000), "value": ch + s}
        for s in range(5)
        for ch in (2, 1)
    ]
    await ingest(client, {"channels": declare(1, 2), "rows": rows})

    page = (
        await client.get("/data", params={"from": format_time(base + 1000), "to": format_time(base + 3000)})
    ).json()
    assert page["from"] == format_time(base + 1000) and page["to"] == format_time(base + 3000)
    assert page["rows"] == [
        {"channel_id": 1, "time": format_time(base + 1000), "value": 2.0},
        {"channel_id": 2, "time": format_time(base + 1000), "value": 3.0},
        {"channel_id": 1, "time": format_time(base + 2000), "value": 3.0},
        {"channel_id": 2, "time": format_time(base + 2000), "value": 4.0},
    ]
    assert (page["count"], page["truncated"], page["next_from"]) == (4, False, None)
    # Epoch seconds and other ISO spellings name the same window.
    same = await client.get("/data", params={"from": (base + 1000) / 1000, "to": str((base + 3000) // 1000)})
    assert same.json()["rows"] == page["rows"]
    offset = format_time(base + 1000).replace("Z", "+00:00")
    assert (await client.get("/data", params={"from": offset, "to": format_time(base + 3000)})).json() == page
    # An empty window and a window before the data are empty, not errors.
    assert (await client.get("/data", params={"from": base / 1000, "to": base / 1000})).json()["rows"] == []
    assert (await client.get("/data", params={"from": 0, "to": 1})).json()["count"] == 0


async def test_paging_by_next_from_yields_every_row_once(sim_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(sim_agent)
    status = (await client.get("/status")).json()
    start, end = status["oldest_data"], format_time(now_ms() - 10_000)
    expected = await sim_agent.store.read_window(parse_time(start), parse_time(end), 10_000_000)
    assert len(expected.rows) > 150_000

    rows, pages = await pull_all(client, start, end)
    assert pages == math.ceil(len(expected.rows) / 50_000)  # 25 channels: pages of 50,000 fill exactly
    keys = [(r["time"], r["channel_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(expected.rows)
    assert keys == sorted(keys)  # ISO-8601 with fixed width sorts like time
    assert [(parse_time(r["time"]), r["channel_id"], r["value"]) for r in rows[:3]] == [
        (t, ch, v) for ch, t, v in expected.rows[:3]
    ]

    # A smaller page size chosen by the client pages the same rows.
    small, small_pages = await pull_all(client, start, end, limit=33_333)
    assert small == rows and small_pages > pages


async def test_truncated_window_split_into_ten_minute_windows(
    sim_agent: AgentHandle, client_for: Clients
) -> None:
    """The seed's alternative: on truncated=true, pull the same window again in 10-minute pieces."""
    client = client_for(sim_agent)
    end = (now_ms() - 60_000) // 60_000 * 60_000
    start = end - 3_600_000
    whole = (await client.get("/data", params={"from": format_time(start), "to": format_time(end)})).json()
    assert whole["truncated"] is True and whole["count"] <= 50_000
    pieces: list[Any] = []
    for piece_start in range(start, end, 600_000):
        params = {"from": format_time(piece_start), "to": format_time(piece_start + 600_000)}
        piece = (await client.get("/data", params=params)).json()
        assert piece["truncated"] is False
        pieces.extend(piece["rows"])
    assert len(pieces) == 3600 * 25
    assert pieces[: whole["count"]] == whole["rows"]


async def test_window_end_is_held_back_to_the_settle_horizon(
    sim_agent: AgentHandle, client_for: Clients
) -> None:
    client = client_for(sim_agent)
    before = now_ms()
    page = (
        await client.get("/data", params={"from": (before - 20_000) / 1000, "to": (before + 60_000) / 1000})
    ).json()
    answered_to = parse_time(page["to"])
    assert before - 2000 <= answered_to <= now_ms() - 2000
    assert all(parse_time(r["time"]) < answered_to for r in page["rows"])
    # Without "to", the window ends at the horizon too.
    page = (await client.get("/data", params={"from": (before - 5000) / 1000})).json()
    assert parse_time(page["to"]) <= now_ms() - 2000
    # A window wholly in the future is empty and ends where it starts.
    future = format_time(before + 3_600_000)
    page = (await client.get("/data", params={"from": future, "to": format_time(before + 3_700_000)})).json()
    assert page["from"] == page["to"] == future and page["rows"] == []
    page = (await client.get("/data", params={"from": future})).json()
    assert page["from"] == page["to"] == future and page["rows"] == []


WINDOW_ERRORS = [
    ({}, "missing_parameter"),
    ({"from": "yesterday"}, "invalid_time"),
    ({"from": "0", "to": "2024-02-30T00:00:00Z"}, "invalid_time"),
    ({"from": "1e3"}, "invalid_time"),
    ({"from": "20", "to": "10"}, "invalid_window"),
    ({"from": "0", "to": str(8 * 86_400)}, "window_too_large"),
]
LIMIT_ERRORS = [
    ({"from": "0", "to": "1", "limit": "0"}, "invalid_parameter"),
    ({"from": "0", "to": "1", "limit": "many"}, "invalid_parameter"),
]


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [("/data", p, c) for p, c in WINDOW_ERRORS + LIMIT_ERRORS]
    + [("/alarms", p, c) for p, c in WINDOW_ERRORS],
)
async def test_bad_parameters_are_400(
    sim_agent: AgentHandle, client_for: Clients, path: str, params: dict[str, str], code: str
) -> None:
    assert_error(await client_for(sim_agent).get(path, params=params), 400, code)


async def test_unknown_path_and_method_use_the_error_shape(
    sim_agent: AgentHandle, client_for: Clients
) -> None:
    client = client_for(sim_agent)
    assert_error(await client.get("/nothing"), 404, "not_found")
    assert_error(await client.post("/status"), 405, "method_not_allowed")


async def test_latest_has_the_newest_value_of_each_channel(
    ingest_agent: AgentHandle, client_for: Clients
) -> None:
    client = client_for(ingest_agent)
    assert (await client.get("/data/latest")).json()["rows"] == []
    base = now_ms() // 1000 * 1000 - 60_000
    rows = [{"channel_id": 1, "time": (base + s * 1000) / 1000, "value": s * 1.5} for s in range(3)]
    rows.append({"channel_id": 2, "time": base / 1000, "value": -4.25})
    await ingest(client, {"channels": declare(1, 2, 3), "rows": rows})
    latest = (await client.get("/data/latest")).json()
    assert ISO_MS_Z.fullmatch(latest["time"])
    assert latest["count"] == 2
    assert latest["rows"] == [
        {"channel_id": 1, "time": format_time(base + 2000), "value": 3.0},
        {"channel_id": 2, "time": format_time(base), "value": -4.25},
    ]


async def test_latest_on_the_simulator_covers_every_channel(
    sim_agent: AgentHandle, client_for: Clients
) -> None:
    latest = (await client_for(sim_agent).get("/data/latest")).json()
    assert [r["channel_id"] for r in latest["rows"]] == list(range(1, 26))
    assert all(now_ms() - parse_time(r["time"]) < 5000 for r in latest["rows"])


# -- alarms -----------------------------------------------------------------------------------------------


async def test_simulated_alarms_are_raised_and_resolved(sim_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(sim_agent)
    start = (await client.get("/status")).json()["oldest_data"]
    body = (await client.get("/alarms", params={"from": start})).json()
    assert set(body) == {"from", "to", "alarms", "count", "truncated"}
    alarms = body["alarms"]
    assert body["count"] == len(alarms) > 0 and body["truncated"] is False
    resolved = [a for a in alarms if a["resolved_at"] is not None]
    assert resolved
    for alarm in alarms:
        assert set(alarm) == {"alarm_id", "channel_id", "level", "message", "raised_at", "resolved_at"}
        assert isinstance(alarm["alarm_id"], int) and 0 < alarm["alarm_id"] < 2**63
        assert alarm["level"] in {"info", "warning", "critical"}
        assert ISO_MS_Z.fullmatch(alarm["raised_at"])
    assert [a["raised_at"] for a in alarms] == sorted(a["raised_at"] for a in alarms)
    assert len({a["alarm_id"] for a in alarms}) == len(alarms)
    # A window around a resolution only returns that alarm with its resolution (so updates propagate).
    target = resolved[0]
    resolved_ms = parse_time(target["resolved_at"])
    around = (
        await client.get("/alarms", params={"from": resolved_ms / 1000, "to": (resolved_ms + 1) / 1000})
    ).json()
    assert target in around["alarms"]


async def test_alarm_resolution_propagates(ingest_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(ingest_agent)
    raised = now_ms() - 30_000
    alarm = {"alarm_id": 987_654_321_012, "channel_id": None, "level": "critical", "message": "door open"}
    await ingest(client, {"alarms": [{**alarm, "raised_at": raised / 1000}]})
    first = (await client.get("/alarms", params={"from": raised / 1000, "to": (raised + 1) / 1000})).json()
    assert first["alarms"] == [{**alarm, "raised_at": format_time(raised), "resolved_at": None}]

    resolved = now_ms() - 10_000
    await ingest(client, {"alarms": [{**alarm, "raised_at": raised / 1000, "resolved_at": resolved / 1000}]})
    window = {"from": (resolved - 1) / 1000, "to": (resolved + 1) / 1000}
    second = (await client.get("/alarms", params=window)).json()
    assert second["alarms"] == [
        {**alarm, "raised_at": format_time(raised), "resolved_at": format_time(resolved)}
    ]


# -- the ring buffer, restarts, failure ---------------------------------------------------------------------


async def test_running_agent_prunes_its_ring_buffer(
    make_config: Callable[..., AgentConfig], client_for: Clients
) -> None:
    config = make_config(seed=1, backfill_seconds=600, retention_rows=2000, prune_interval_seconds=0.05)
    async with running_agent_handle(config) as agent:
        assert agent.store.row_count <= 2000 + 25 * 2
        status = (await client_for(agent).get("/status")).json()
        assert now_ms() - parse_time(status["oldest_data"]) <= 100_000
    aged = make_config(seed=1, backfill_seconds=600, retention_hours=60 / 3600, prune_interval_seconds=0.05)
    async with running_agent_handle(aged) as agent:
        oldest, _ = await agent.store.data_span()
        assert oldest is not None and now_ms() - oldest <= 61_000 + 1000


async def test_restart_keeps_history_without_duplicates(make_config: Callable[..., AgentConfig]) -> None:
    config = make_config(seed=9, backfill_seconds=300)
    far = now_ms() + 3_600_000
    async with running_agent_handle(config) as agent:
        first = {(t, ch): v for ch, t, v in (await agent.store.read_window(0, far, 10_000_000)).rows}
    first_newest = max(t for t, _ in first)
    async with running_agent_handle(config) as agent:
        second = {(t, ch): v for ch, t, v in (await agent.store.read_window(0, far, 10_000_000)).rows}
        alarms, _ = await agent.store.alarms_in_window(0, far, 10_000)
    # The first run's rows are all still there, unchanged, and the second run wrote nothing among them: its
    # history starts after the newest stored row. (The live feed may have added a tick after the first read.)
    assert {key: v for key, v in second.items() if key[0] <= first_newest} == first
    assert min(t for t, _ in second) == min(t for t, _ in first)
    assert max(t for t, _ in second) >= first_newest
    # Alarms the first run left open were resolved when it restarted.
    assert all(a.raised_at > first_newest for a in alarms if a.resolved_at is None)


async def test_database_failure_is_503_and_status_reports_it(
    ingest_agent: AgentHandle, client_for: Clients
) -> None:
    client = client_for(ingest_agent)
    await ingest_agent.store.close()
    status = await client.get("/status")
    assert status.status_code == 200 and status.json()["db_ok"] is False and status.json()["online"] is True
    assert status.json()["oldest_data"] is None
    assert_error(await client.get("/data", params={"from": 0, "to": 1}), 503, "db_unavailable")
    assert_error(await client.get("/channels"), 503, "db_unavailable")
    assert_error(await client.get("/data/latest"), 503, "db_unavailable")
    assert_error(await client.get("/alarms", params={"from": 0, "to": 1}), 503, "db_unavailable")
    assert_error(await client.post("/ingest", json={"channels": declare(1)}), 503, "db_unavailable")


async def test_large_responses_are_gzipped_on_request(sim_agent: AgentHandle, client_for: Clients) -> None:
    end = now_ms() - 3_600_000
    params = {"from": format_time(end - 600_000), "to": format_time(end)}
    packed = await client_for(sim_agent).get("/data", params=params)  # httpx asks for gzip by default
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.num_bytes_downloaded * 5 < len(packed.content)
    plain = await client_for(sim_agent, headers={**sim_agent.headers, "Accept-Encoding": "identity"}).get(
        "/data", params=params
    )
    assert "content-encoding" not in plain.headers and plain.json() == packed.json()


async def test_data_pages_are_fast(sim_agent: AgentHandle, client_for: Clients) -> None:
    """A regression guard with a wide margin (measured ~3 ms and ~60 ms on a laptop-class CPU)."""
    client = client_for(sim_agent)
    end = now_ms() - 3_600_000
    timings = {}
    for rows, seconds in ((750, 30), (50_000, 2000)):
        params = {"from": format_time(end - seconds * 1000), "to": format_time(end)}
        await client.get("/data", params=params)  # warm the page cache
        started = time.perf_counter()
        response = await client.get("/data", params=params)
        timings[rows] = time.perf_counter() - started
        assert response.json()["count"] == rows
    assert timings[750] < 0.5 and timings[50_000] < 2.0, timings
