"""Fixtures for the agent tests: configs on temporary databases and agents served over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.agent.config import AgentConfig
from fleet.agent.testing import AgentHandle, running_agent_handle

API_KEY = "test-key-0123456789abcdef"
# Two hours of simulated history: 180,000 rows, enough for several 50,000-row pages and a few alarms.
SIM_BACKFILL_SECONDS = 7200
SIM_SEED = 11


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., AgentConfig]:
    """Return a factory of configs on a fresh database under the test's temporary directory."""
    counter = 0

    def make(**overrides: Any) -> AgentConfig:
        nonlocal counter
        counter += 1
        values: dict[str, Any] = {"api_key": API_KEY, "db_path": tmp_path / f"agent{counter}.db"}
        values.update(overrides)
        return AgentConfig(**values)

    return make


@pytest.fixture(scope="session")
async def sim_agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentHandle]:
    """A simulating agent with two hours of history, shared by the session's tests.

    Tests only read it; a test that injects a fault clears it in a ``finally``.
    """
    config = AgentConfig(
        api_key=API_KEY,
        db_path=tmp_path_factory.mktemp("sim") / "agent.db",
        seed=SIM_SEED,
        backfill_seconds=SIM_BACKFILL_SECONDS,
    )
    async with running_agent_handle(config) as handle:
        yield handle


@pytest.fixture
async def ingest_agent(make_config: Callable[..., AgentConfig]) -> AsyncIterator[AgentHandle]:
    """An agent without the simulator, for tests that write exactly the rows they read back."""
    async with running_agent_handle(make_config(simulate=False, settle_seconds=0)) as handle:
        yield handle


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[AgentHandle], httpx.AsyncClient]]:
    """Return a factory of authenticated HTTP clients for agents; all are closed after the test."""
    clients: list[httpx.AsyncClient] = []

    def make(agent: AgentHandle, **kwargs: Any) -> httpx.AsyncClient:
        options: dict[str, Any] = {"base_url": agent.base_url, "headers": agent.headers, "timeout": 10.0}
        client = httpx.AsyncClient(**{**options, **kwargs})
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """Check a response carries the contract's error shape with the given status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
