"""POST /ingest: what a vehicle computer may write, and what it may not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from fleet.agent.config import AgentConfig
from fleet.agent.testing import AgentHandle, running_agent_handle
from fleet.agent.times import format_time, now_ms

from .conftest import API_KEY, assert_error

Clients = Callable[..., httpx.AsyncClient]
CHANNELS = [
    {"channel_id": 1, "name": "pump_pressure", "unit": "bar", "phys_min": 0, "phys_max": 250},
    {"channel_id": 2, "name": "tank_level", "unit": "%", "phys_min": 0, "phys_max": 100},
]


@pytest.fixture
async def small_agent(make_config: Callable[..., AgentConfig]) -> AsyncIterator[AgentHandle]:
    """An ingest-only agent with tiny caps."""
    config = make_config(
        simulate=False, settle_seconds=0, ingest_max_bytes=4096, ingest_max_rows=20, ingest_max_alarms=3
    )
    async with running_agent_handle(config) as handle:
        yield handle


def row(channel_id: int = 1, time: Any = None, value: Any = 1.5) -> dict[str, Any]:
    return {
        "channel_id": channel_id,
        "time": time if time is not None else now_ms() / 1000 - 60,
        "value": value,
    }


async def test_ingest_stores_channels_rows_and_alarms(ingest_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(ingest_agent)
    t = now_ms() // 1000 * 1000 - 30_000
    body = {
        "channels": CHANNELS,
        "rows": [row(1, format_time(t), 101.25), row(2, t / 1000, 55), row(1, (t + 1000) / 1000, 99.0)],
        "alarms": [
            {
                "alarm_id": 5,
                "channel_id": 1,
                "level": "warning",
                "message": "pressure",
                "raised_at": format_time(t),
            }
        ],
    }
    response = await client.post("/ingest", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "channels_written": 2,
        "rows_written": 3,
        "rows_duplicate": 0,
        "alarms_written": 1,
        "late_rows": 0,
    }
    assert (await client.get("/channels")).json()["channels"] == CHANNELS
    page = (await client.get("/data", params={"from": t / 1000})).json()
    assert [(r["channel_id"], r["value"]) for r in page["rows"]] == [(1, 101.25), (2, 55.0), (1, 99.0)]
    # The same request again is harmless: rows are duplicates, the open alarm does not change.
    again = (await client.post("/ingest", json=body)).json()
    assert (again["rows_written"], again["rows_duplicate"], again["alarms_written"]) == (0, 3, 0)


async def test_python_writer_feeds_the_same_buffer(ingest_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(ingest_agent)
    await client.post("/ingest", json={"channels": CHANNELS})
    t = now_ms() - 5000
    result = await ingest_agent.store.append_rows([(2, t, 12.5), (1, t, 3.0)])
    assert result.written == 2
    latest = (await client.get("/data/latest")).json()["rows"]
    assert latest == [
        {"channel_id": 1, "time": format_time(t), "value": 3.0},
        {"channel_id": 2, "time": format_time(t), "value": 12.5},
    ]


@pytest.fixture(scope="module")
async def strict_agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentHandle]:
    """One ingest-only agent for the many refused bodies: a refused request stores nothing."""
    config = AgentConfig(api_key=API_KEY, db_path=tmp_path_factory.mktemp("strict") / "a.db", simulate=False)
    async with running_agent_handle(config) as handle:
        async with httpx.AsyncClient(base_url=handle.base_url, headers=handle.headers) as client:
            assert (await client.post("/ingest", json={"channels": CHANNELS})).status_code == 200
        yield handle


@pytest.mark.parametrize(
    "body",
    [
        '{"rows": [{"channel_id": 1, "time": 1, "value": NaN}]}',
        '{"rows": [{"channel_id": 1, "time": 1, "value": Infinity}]}',
        '{"rows": [{"channel_id": 1, "time": 1, "value": -Infinity}]}',
        '{"rows": [{"channel_id": 1, "time": 1, "value": "1.5"}]}',
        '{"rows": [{"channel_id": 1, "time": 1, "value": true}]}',
        '{"rows": [{"channel_id": "1", "time": 1, "value": 1.5}]}',
        '{"rows": [{"channel_id": -1, "time": 1, "value": 1.5}]}',
        '{"rows": [{"channel_id": 1.5, "time": 1, "value": 1.5}]}',
        '{"rows": [{"channel_id": 1, "value": 1.5}]}',
        '{"rows": [{"channel_id": 1, "time": "soon", "value": 1.5}]}',
        '{"rows": [{"channel_id": 1, "time": true, "value": 1.5}]}',
        '{"rows": [{"channel_id": 1, "time": 1, "value": 1.5, "unit": "V"}]}',
        '{"rows": {"channel_id": 1}}',
        '{"samples": []}',
        "[]",
        "not json",
        "",
        '{"alarms": [{"alarm_id": 1, "level": "fatal", "message": "m", "raised_at": 1}]}',
        '{"alarms": [{"alarm_id": 0, "level": "info", "message": "m", "raised_at": 1}]}',
        '{"alarms": [{"alarm_id": 1, "level": "info", "message": "", "raised_at": 1}]}',
        '{"alarms": [{"alarm_id": 1, "level": "info", "message": "m", "raised_at": 10, "resolved_at": 9}]}',
        '{"channels": [{"channel_id": 3, "name": "x", "unit": "", "phys_min": 5, "phys_max": 1}]}',
        '{"channels": [{"channel_id": 3, "name": "", "unit": "", "phys_min": 0, "phys_max": 1}]}',
    ],
)
async def test_invalid_bodies_are_400(strict_agent: AgentHandle, client_for: Clients, body: str) -> None:
    client = client_for(strict_agent)
    response = await client.post("/ingest", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_body")
    assert strict_agent.store.row_count == 0
    assert [c["channel_id"] for c in (await client.get("/channels")).json()["channels"]] == [1, 2]


async def test_unknown_channel_refuses_the_whole_request(
    ingest_agent: AgentHandle, client_for: Clients
) -> None:
    client = client_for(ingest_agent)
    body = {"channels": CHANNELS[:1], "rows": [row(1), row(9), row(8)]}
    response = await client.post("/ingest", json=body)
    assert_error(response, 400, "unknown_channel")
    assert "8, 9" in response.json()["error"]["message"]
    # Nothing of the request was stored, not even its channel declaration.
    assert (await client.get("/channels")).json()["channels"] == []
    assert ingest_agent.store.row_count == 0


async def test_times_far_in_the_future_are_refused(ingest_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(ingest_agent)
    future = now_ms() / 1000 + 3600
    response = await client.post("/ingest", json={"channels": CHANNELS, "rows": [row(1, future)]})
    assert_error(response, 400, "time_in_future")
    alarm = {"alarm_id": 1, "level": "info", "message": "m", "raised_at": 1, "resolved_at": future}
    assert_error(await client.post("/ingest", json={"alarms": [alarm]}), 400, "time_in_future")
    # A writer clock a minute ahead is tolerated.
    ok = await client.post("/ingest", json={"channels": CHANNELS, "rows": [row(1, now_ms() / 1000 + 60)]})
    assert ok.status_code == 200


async def test_body_size_is_capped(small_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(small_agent)
    await client.post("/ingest", json={"channels": CHANNELS})
    big = json.dumps({"rows": [row(1, 1_700_000_000 + i) for i in range(200)]}).encode()
    assert len(big) > 4096
    assert_error(await client.post("/ingest", content=big), 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap applies while reading
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    assert_error(await client.post("/ingest", content=chunks()), 413, "payload_too_large")
    assert small_agent.store.row_count == 0


async def test_row_and_alarm_counts_are_capped(small_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(small_agent)
    await client.post("/ingest", json={"channels": CHANNELS})
    rows = [{"channel_id": 1, "time": i, "value": 0} for i in range(1, 22)]
    assert_error(await client.post("/ingest", json={"rows": rows}), 413, "payload_too_large")
    assert (await client.post("/ingest", json={"rows": rows[:20]})).json()["rows_written"] == 20
    alarms = [{"alarm_id": i, "level": "info", "message": "m", "raised_at": 1} for i in range(1, 5)]
    assert_error(await client.post("/ingest", json={"alarms": alarms}), 413, "payload_too_large")


async def test_rows_behind_a_served_window_are_reported_late(
    ingest_agent: AgentHandle, client_for: Clients
) -> None:
    client = client_for(ingest_agent)
    await client.post("/ingest", json={"channels": CHANNELS})
    served_to = now_ms() - 20_000
    await client.get("/data", params={"from": (served_to - 60_000) / 1000, "to": served_to / 1000})
    body = {
        "rows": [row(1, (served_to - 1) / 1000), row(1, served_to / 1000), row(2, (served_to - 5000) / 1000)]
    }
    result = (await client.post("/ingest", json=body)).json()
    assert result["rows_written"] == 3 and result["late_rows"] == 2
