"""Fault injection and the request log, as the sync service's tests will use them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fleet.agent.config import AgentConfig, FaultEndpoint, FaultMode
from fleet.agent.faults import FaultInjector
from fleet.agent.testing import AgentHandle, running_agent, running_agent_handle
from fleet.agent.times import format_time, now_ms

from .conftest import API_KEY, assert_error

Clients = Callable[..., httpx.AsyncClient]


def recent() -> dict[str, str]:
    end = now_ms() - 60_000
    return {"from": format_time(end - 120_000), "to": format_time(end)}


async def test_fault_mode_from_config(make_config: Callable[..., AgentConfig]) -> None:
    config = make_config(seed=2, backfill_seconds=60, fault_mode="error", fault_status=502)
    async with (
        running_agent(config) as base_url,
        httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}) as client,
    ):
        assert_error(await client.get("/data", params={"from": 0, "to": 1}), 502, "fault_injected")
        assert (await client.get("/status")).status_code == 200  # only /data by default
        assert (await client.get("/alarms", params={"from": 0, "to": 1})).status_code == 200


async def test_error_for_a_number_of_requests_then_recover(
    sim_agent: AgentHandle, client_for: Clients
) -> None:
    client = client_for(sim_agent)
    sim_agent.faults.set(FaultMode.ERROR, times=2, status=503)
    try:
        assert_error(await client.get("/data", params=recent()), 503, "fault_injected")
        assert (await client.get("/status")).status_code == 200  # not counted: /status is not faulted
        assert_error(await client.get("/data", params=recent()), 503, "fault_injected")
        assert (await client.get("/data", params=recent())).status_code == 200
        assert sim_agent.faults.mode is FaultMode.NONE and sim_agent.faults.hits >= 2
        # Options of one set() do not outlive it: the next fault has the baseline's status again.
        sim_agent.faults.set(FaultMode.ERROR, times=1)
        assert_error(await client.get("/data", params=recent()), 500, "fault_injected")
    finally:
        sim_agent.faults.clear()


async def test_slow_answers_outlast_a_client_timeout(sim_agent: AgentHandle, client_for: Clients) -> None:
    sim_agent.faults.set(
        FaultMode.SLOW, delay_seconds=0.5, endpoints={FaultEndpoint.STATUS, FaultEndpoint.DATA}
    )
    try:
        impatient = client_for(sim_agent, timeout=0.1)
        with pytest.raises(httpx.ReadTimeout):
            await impatient.get("/status")
        patient = client_for(sim_agent)
        assert (await patient.get("/data", params=recent())).status_code == 200
    finally:
        sim_agent.faults.clear()
    assert (await client_for(sim_agent, timeout=2.0).get("/status")).status_code == 200


async def test_truncate_cuts_pages_and_paging_still_works(
    sim_agent: AgentHandle, client_for: Clients
) -> None:
    client = client_for(sim_agent)
    window = recent()
    full = (await client.get("/data", params=window)).json()
    assert not full["truncated"] and full["count"] == 120 * 25
    sim_agent.faults.set(
        FaultMode.TRUNCATE, row_limit=1000, endpoints={FaultEndpoint.DATA, FaultEndpoint.ALARMS}
    )
    try:
        rows, cursor, pages = [], window["from"], 0
        while True:
            page = (await client.get("/data", params={"from": cursor, "to": window["to"]})).json()
            assert page["count"] <= 1000
            rows.extend(page["rows"])
            pages += 1
            if not page["truncated"]:
                break
            cursor = page["next_from"]
        assert rows == full["rows"] and pages == 3
        start = (await client.get("/status")).json()["oldest_data"]
        sim_agent.faults.set(FaultMode.TRUNCATE, row_limit=1, endpoints={FaultEndpoint.ALARMS})
        alarms = (await client.get("/alarms", params={"from": start})).json()
        assert alarms["count"] == 1 and alarms["truncated"] is True
    finally:
        sim_agent.faults.clear()


async def test_status_can_fail_alone(sim_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(sim_agent)
    sim_agent.faults.set(FaultMode.ERROR, endpoints={FaultEndpoint.STATUS})
    try:
        assert_error(await client.get("/status"), 500, "fault_injected")
        assert (await client.get("/data", params=recent())).status_code == 200
    finally:
        sim_agent.faults.clear()


async def test_request_log_shows_the_windows_asked_for(sim_agent: AgentHandle, client_for: Clients) -> None:
    client = client_for(sim_agent)
    window = recent()
    await client.get("/data", params=window)
    await client.get("/nowhere")
    last_two = sim_agent.requests[-2:]
    assert (last_two[0].method, last_two[0].path, last_two[0].query, last_two[0].status) == (
        "GET",
        "/data",
        window,
        200,
    )
    assert (last_two[1].path, last_two[1].status) == ("/nowhere", 404)


def test_injector_validates_its_settings() -> None:
    faults = FaultInjector()
    for bad in ({"status": 200}, {"row_limit": 0}, {"times": 0}, {"delay_seconds": -1}):
        with pytest.raises(ValueError):
            faults.set(FaultMode.ERROR, **bad)  # type: ignore[arg-type]
    assert faults.take(FaultEndpoint.DATA) is None
    faults.set(FaultMode.SLOW, times=1, delay_seconds=0.25)
    assert faults.take(FaultEndpoint.STATUS) is None  # another endpoint: not counted
    fault = faults.take(FaultEndpoint.DATA)
    assert fault is not None and (fault.mode, fault.delay_seconds) == (FaultMode.SLOW, 0.25)
    assert faults.take(FaultEndpoint.DATA) is None and faults.hits == 1


async def test_a_failed_start_is_an_error_not_an_exit(
    make_config: Callable[..., AgentConfig], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(RuntimeError, match="failed to start"):
        async with running_agent(make_config(db_path=blocker / "agent.db")):
            pass


async def test_several_agents_run_side_by_side(make_config: Callable[..., AgentConfig]) -> None:
    first, second = make_config(seed=1, backfill_seconds=30), make_config(seed=2, backfill_seconds=30)
    async with running_agent_handle(first) as one, running_agent_handle(second) as two:
        assert one.base_url != two.base_url
        async with httpx.AsyncClient(headers=one.headers) as client:
            latest_one = (await client.get(f"{one.base_url}/data/latest")).json()["rows"]
            latest_two = (await client.get(f"{two.base_url}/data/latest")).json()["rows"]
        assert [r["value"] for r in latest_one] != [r["value"] for r in latest_two]
        first_rows = (await one.store.read_window(0, now_ms(), 30 * 25)).rows
    # The same seed gives the same truck, whenever it starts.
    async with running_agent_handle(make_config(seed=1, backfill_seconds=30)) as twin:
        twin_rows = (await twin.store.read_window(0, now_ms(), 30 * 25)).rows
    assert [(ch, v) for ch, _, v in first_rows] == [(ch, v) for ch, _, v in twin_rows]
