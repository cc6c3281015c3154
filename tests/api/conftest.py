"""Fixtures of the API tests: a live server on a real socket, a local SMTP server, a local OpenID provider,
and users with tokens minted directly (bcrypt runs only where a test is about passwords)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from fleet.api.app import create_app
from fleet.api.server import server_config
from fleet.auth import tokens
from fleet.config import Settings
from fleet.db import Database
from fleet.db.queries import auth as auth_q
from fleet.db.queries.users import create_user
from fleet.db.queries.vehicles import attach_device, create_vehicle
from fleet.runtime import Runtime

from .oidc_provider import OidcProvider

PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def unique_email(prefix: str = "user") -> str:
    return f"{unique(prefix)}@example.com"


def unique_imei() -> str:
    return str(uuid.uuid4().int)[:15]


class LiveServer:
    """uvicorn serving an app on 127.0.0.1:<free port> inside the test session's event loop.

    With `settings`, the server is configured exactly as `fleet serve` configures the API (deadlines for slow
    clients included); without, it is a plain uvicorn (the OpenID provider double).
    """

    def __init__(self, app: Any, settings: Settings | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if settings is not None:
            config = server_config(app, settings, host="127.0.0.1", port=self.port, ws="none", lifespan="on")
        else:
            config = uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                ws="none",
                lifespan="on",
            )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> LiveServer:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                await self.task
                raise AssertionError("test server did not start")
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


@dataclass
class SentMail:
    recipients: list[str]
    content: str


class MailHandler:
    def __init__(self) -> None:
        self.messages: list[SentMail] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content.decode("utf-8", "replace")
        self.messages.append(SentMail(list(envelope.rcpt_tos), content))
        return "250 OK"

    def to(self, address: str) -> list[SentMail]:
        return [m for m in self.messages if address in m.recipients]


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[MailHandler, int]]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 collecting what it receives."""
    handler = MailHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture(scope="session")
async def oidc_provider() -> AsyncIterator[OidcProvider]:
    provider = OidcProvider(client_id="fleet-test-client", client_secret="fleet-test-secret")
    server = await LiveServer(provider.app()).start()
    provider.issuer = server.url
    try:
        yield provider
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def api_settings(
    test_settings: Settings, smtp_server: tuple[MailHandler, int], oidc_provider: OidcProvider
) -> Settings:
    """Settings of the shared live API: generous rate limits, local SMTP and OpenID provider."""
    return test_settings.model_copy(
        update={
            "rate_limit_login_per_minute": 10_000,
            "rate_limit_register_per_hour": 10_000,
            "rate_limit_refresh_per_minute": 10_000,
            "rate_limit_api_per_minute": 100_000,
            "rate_limit_key_prefix": f"fleet-test:{uuid.uuid4().hex[:8]}",
            "smtp_url": f"smtp://127.0.0.1:{smtp_server[1]}",
            "google_client_id": oidc_provider.client_id,
            "google_client_secret": SecretStr(oidc_provider.client_secret),
            "oidc_discovery_url": f"{oidc_provider.issuer}/.well-known/openid-configuration",
        }
    )


@contextlib.asynccontextmanager
async def serve_api(settings: Settings, db: Database) -> AsyncIterator[LiveServer]:
    """An API of its own (with these settings) on a real socket, sharing the session database."""
    runtime = Runtime(settings=settings, db=db, roles=["api"])
    server = await LiveServer(create_app(settings, runtime=runtime), settings).start()
    try:
        yield server
    finally:
        await server.stop()
        await runtime.cancel_tasks()


@pytest.fixture(scope="session")
async def live_api(api_settings: Settings, db: Database) -> AsyncIterator[LiveServer]:
    """The API on a real socket, sharing the session database."""
    async with serve_api(api_settings, db) as server:
        yield server


@pytest.fixture
async def http(live_api: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_api.url, timeout=30) as client:
        yield client


@dataclass
class Account:
    id: int
    email: str
    role: str
    token: str
    session_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_account(
    db: Database,
    settings: Settings,
    *,
    role: str = "owner",
    status: str = "active",
    password_hash: str | None = None,
) -> Account:
    """A user and a signed-in session, minted without bcrypt (tests about passwords use /auth/login)."""
    email = unique_email(role)
    async with db.system() as conn:
        user = await create_user(conn, email=email, password_hash=password_hash, role=role, status=status)
        session_id = tokens.new_session_id()
        refresh = tokens.new_refresh_token()
        await auth_q.store_refresh_token(
            conn,
            token_id=refresh.token_id,
            user_id=user["id"],
            family_id=session_id,
            token_hash=refresh.token_hash,
            expires_at=datetime.now(UTC) + timedelta(days=1),
            client_addr=None,
        )
    assert settings.secret_key is not None
    token, _ = tokens.issue_access_token(
        settings.secret_key.get_secret_value(),
        user_id=user["id"],
        role=role,
        token_version=user["token_version"],
        session_id=session_id,
        ttl_sec=900,
    )
    return Account(user["id"], email, role, token, session_id)


@pytest.fixture(scope="session")
async def admin(db: Database, api_settings: Settings) -> Account:
    return await make_account(db, api_settings, role="superuser")


@dataclass
class Fleet:
    """A vehicle with one tracker, owned (assigned) by `owner`."""

    owner: Account
    vehicle_id: int
    device_id: int
    imei: str


async def make_fleet(db: Database, owner: Account, name: str | None = None) -> Fleet:
    imei = unique_imei()
    async with db.system() as conn:
        vehicle = await create_vehicle(conn, name=name or unique("truck"))
        device = await attach_device(conn, imei=imei, vehicle_id=vehicle["id"])
        await conn.execute(
            "INSERT INTO vehicle_access (user_id, vehicle_id) VALUES ($1, $2)", owner.id, vehicle["id"]
        )
    return Fleet(owner, vehicle["id"], device["id"], imei)


async def add_positions(
    db: Database, fleet: Fleet, start: datetime, count: int, step: timedelta = timedelta(seconds=1)
) -> None:
    rows = [
        (
            fleet.device_id,
            fleet.vehicle_id,
            i,
            start + i * step,
            True,
            50.0 + i * 1e-4,
            30.0 + i * 1e-4,
            float(i % 120),
            100.0,
        )
        for i in range(count)
    ]
    async with db.system() as conn:
        await conn.executemany(
            """INSERT INTO positions (device_id, vehicle_id, record_index, device_time, valid, latitude,
                                      longitude, speed, altitude) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            rows,
        )
