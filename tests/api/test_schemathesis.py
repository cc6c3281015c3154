"""Schemathesis over the OpenAPI schema against a live server: no input produces a 5xx.

The server runs in its own thread and event loop (Schemathesis calls it synchronously) on a database of
its own, created for this module, so that fuzzed admin actions (block, approve, assign) cannot touch the
accounts other tests use. Authenticated as a superuser with the static API key; bounded examples.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from fleet.api.app import create_app
from fleet.config import Settings
from fleet.db import Database
from fleet.runtime import Runtime

from .conftest import LiveServer

MAX_EXAMPLES = 12

schema = schemathesis.openapi.from_dict(create_app(Settings(env="test")).openapi())


def _swap_database(dsn: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class ThreadedServer:
    """The API in a thread with its own loop, pool and (fresh) database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ready = threading.Event()
        self.url = ""
        self.error: BaseException | None = None
        self._server: LiveServer | None = None
        self._thread = threading.Thread(target=self._run, name="schemathesis-api", daemon=True)

    def start(self) -> ThreadedServer:
        self._thread.start()
        if not self.ready.wait(120) or self.error is not None:
            raise AssertionError(f"fuzz server did not start: {self.error!r}")
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        db = Database(self.settings)
        try:
            await db.start(migrate_schema=True)
            runtime = Runtime(settings=self.settings, db=db, roles=["api"])
            self._server = await LiveServer(create_app(self.settings, runtime=runtime), self.settings).start()
            self.url = self._server.url
        except BaseException as err:
            self.error = err
            self.ready.set()
            await db.close()
            return
        self.ready.set()
        assert self._server.task is not None
        await self._server.task
        await runtime.cancel_tasks()
        await db.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.server.should_exit = True
        self._thread.join(30)


@pytest.fixture(scope="module")
def fuzz_server(test_settings: Settings, pg_server_dsn: str) -> Iterator[ThreadedServer]:
    name = f"fleet_fuzz_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(pg_server_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    settings = test_settings.model_copy(
        update={
            "database_url": _swap_database(pg_server_dsn, name),
            "rate_limit_login_per_minute": 100_000,
            "rate_limit_register_per_hour": 100_000,
            "rate_limit_refresh_per_minute": 100_000,
            "rate_limit_api_per_minute": 1_000_000,
            "smtp_url": None,
            "db_pool_min": 1,
            "db_pool_max": 4,
        }
    )
    server = ThreadedServer(settings).start()
    try:
        yield server
    finally:
        server.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(
    case: schemathesis.Case, fuzz_server: ThreadedServer, test_settings: Settings
) -> None:
    assert test_settings.api_key is not None
    case.call_and_validate(
        base_url=fuzz_server.url,
        headers={"Authorization": f"Bearer {test_settings.api_key.get_secret_value()}"},
        checks=[not_a_server_error],
        timeout=30,
    )
