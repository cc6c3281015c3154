"""Session-scoped real PostgreSQL for the whole suite.

With `TEST_DATABASE_URL` (a server where we may create databases) a throwaway database is created for
the run and dropped at the end; without it a private embedded PostgreSQL (pgserver) is started in a
temporary directory. Migrations run once; tests isolate themselves with fresh rows or `clean_tables`.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="fleet-xdg-"))
# NATS_URL (set by .ci/run when NATS answers) is for the tests of the NATS bus only, which read it as
# TEST_NATS_URL: left in place, every other test's settings and `fleet` subprocesses would take NATS as
# their live bus (it wins over the default), sharing subjects with concurrent runs.
if "NATS_URL" in os.environ:
    os.environ["TEST_NATS_URL"] = os.environ.pop("NATS_URL")

from fleet.config import Settings, with_user
from fleet.db import Database
from fleet.db.embedded import EmbeddedPostgres


def _swap_database(dsn: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """Owner DSN of an empty database created for this test session."""
    base = os.environ.get("TEST_DATABASE_URL")
    if base:
        import psycopg

        name = f"fleet_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _swap_database(base, name)
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    root = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
    server = EmbeddedPostgres(root / "pg")
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def test_settings(pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        env="test",
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=pg_server_dsn,
        secret_key=secrets.token_urlsafe(32),
        api_key=secrets.token_urlsafe(32),
        db_app_password=secrets.token_urlsafe(24),
        db_grafana_password=secrets.token_urlsafe(24),
        redis_url=None,
    )


@pytest.fixture(scope="session")
async def db(test_settings: Settings) -> AsyncIterator[Database]:
    """The migrated test database with an open `fleet_app` pool."""
    database = Database(test_settings)
    await database.start(migrate_schema=True)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def owner_conn(db: Database) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the schema owner (superuser on test servers): for setup and inspection only."""
    assert db.owner_dsn is not None
    conn = await asyncpg.connect(db.owner_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def app_dsn(db: Database, test_settings: Settings) -> str:
    assert db.owner_dsn is not None
    password = test_settings.db_app_password.get_secret_value() if test_settings.db_app_password else None
    return with_user(db.owner_dsn, "fleet_app", password)


TENANT_TABLES = (
    "security_events, grafana_logins, backup_runs, admin_audit_log, mail_outbox, revoked_tokens, refresh_tokens, api_keys, oauth_accounts, "
    "device_commands, sync_journal, alarms_log, events, can_data, raw_frames, positions, measurements, channel_config, "
    "vehicle_last_positions, "
    "devices, vehicle_access, vehicles, users"
)


@pytest.fixture
async def clean_tables(owner_conn: asyncpg.Connection) -> None:
    """Empty every application table before the test."""
    await owner_conn.execute(f"TRUNCATE {TENANT_TABLES} RESTART IDENTITY CASCADE")
