"""Run real agents inside a test: uvicorn on 127.0.0.1, a free port, the caller's event loop.

For tests of the sync service (or anything else that talks to vehicles)::

    from fleet.agent.config import AgentConfig, FaultMode
    from fleet.agent.testing import running_agent, running_agent_handle

    config = AgentConfig(api_key="k" * 32, db_path=tmp_path / "v1.db", seed=7, backfill_seconds=600)
    async with running_agent(config) as base_url:          # "http://127.0.0.1:<port>"
        ...                                                  # GET f"{base_url}/status" with X-API-Key

    async with running_agent_handle(config) as agent:       # when the test must steer the agent
        agent.faults.set(FaultMode.ERROR, times=1)          # next /data fails with HTTP 500
        agent.faults.set(FaultMode.SLOW, delay_seconds=12)  # /data outlasts a 10 s client timeout
        agent.faults.set(FaultMode.TRUNCATE, row_limit=500) # /data pages of 500 rows, truncated=true
        await agent.store.append_rows([(1, t_ms, 42.0)])    # write rows directly (channel 1 must exist)
        [r.query for r in agent.requests if r.path == "/data"]  # which windows were asked for

Each agent gets its own port and database, so several vehicles can run side by side. ``config.host`` and
``config.port`` are ignored: test agents always bind 127.0.0.1 on a port the OS picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from fleet.agent.app import create_agent_app
from fleet.agent.config import AgentConfig
from fleet.agent.faults import FaultInjector
from fleet.agent.runtime import AgentRuntime, RequestRecord
from fleet.agent.store import AgentStore

# Long enough for a test's slow-fault request to finish, short enough not to stall teardown.
GRACEFUL_SHUTDOWN_SECONDS = 2
STARTUP_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class AgentHandle:
    """A running test agent: where it listens and the objects a test may steer or inspect."""

    base_url: str
    api_key: str
    app: FastAPI
    runtime: AgentRuntime

    @property
    def faults(self) -> FaultInjector:
        """The live fault injector; changes apply to the next request."""
        return self.runtime.faults

    @property
    def store(self) -> AgentStore:
        """The agent's ring buffer."""
        return self.runtime.store

    @property
    def requests(self) -> list[RequestRecord]:
        """Requests answered so far, oldest first (the last 1000)."""
        return list(self.runtime.requests)

    @property
    def headers(self) -> dict[str, str]:
        """The auth header this agent expects."""
        return {"X-API-Key": self.api_key}


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the host process (pytest, or the server under test)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def running_agent_handle(config: AgentConfig, port: int = 0) -> AsyncIterator[AgentHandle]:
    """Serve an agent for the duration of the block and yield its :class:`AgentHandle`.

    `port` 0 lets the OS pick one; a test that stops an agent and starts it again passes the first one's port.
    """
    app = create_agent_app(config)  # raises ConfigError without an API key
    api_key = config.api_key.get_secret_value() if config.api_key is not None else ""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and with proto 0
    # every keep-alive response would wait ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = _EmbeddedServer(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    )
    task = asyncio.create_task(_serve(server, sock), name=f"agent-{port}")
    try:
        await _wait_started(server, task)
        yield AgentHandle(
            base_url=f"http://127.0.0.1:{port}",
            api_key=api_key,
            app=app,
            runtime=app.state.runtime,
        )
    finally:
        server.should_exit = True
        await asyncio.wait([task])
        sock.close()
    task.result()  # a server that failed while shutting down fails the block


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig) -> AsyncIterator[str]:
    """Serve an agent for the duration of the block and yield its base URL, ``http://127.0.0.1:<port>``."""
    async with running_agent_handle(config) as handle:
        yield handle.base_url


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as err:
        # uvicorn exits the process when the lifespan fails to start; in a test that must be an error instead.
        raise RuntimeError(f"the agent failed to start (exit status {err.code})") from err


async def _wait_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the agent stopped before it started listening")
        if loop.time() > deadline:
            server.should_exit = True
            raise TimeoutError("the agent did not start in time")
        await asyncio.sleep(0.01)
