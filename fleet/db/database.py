"""Connection pools and the one way to run a query: inside a transaction that carries the tenant context.

The runtime pool connects as `fleet_app` (NOSUPERUSER, NOBYPASSRLS), so row-level security holds for
every statement. `Database.tenant(...)` opens a transaction and sets `app.user_id` / `app.user_role`
with `set_config(..., true)` (transaction-local: a pooled connection never leaks a context). No other
code path hands out a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import structlog

from fleet.config import Settings, with_user
from fleet.db import migrate
from fleet.db.embedded import EmbeddedPostgres
from fleet.db.metrics import POOL_ACQUIRE, forget_pool, record_query, watch_pool
from fleet.errors import ConfigError, DatabaseUnavailable

log = structlog.get_logger(__name__)

APP_ROLE = "fleet_app"
GRAFANA_ROLE = "fleet_grafana"

_TENANT_ROLES = frozenset({"superuser", "owner"})


def _begin_statement(tenant: Tenant, readonly: bool = False) -> str:
    """BEGIN plus the transaction-local RLS context, as one statement list (values are validated here).

    Nested `conn.transaction()` blocks are not available inside (asyncpg refuses them in a transaction
    it did not start): use explicit SAVEPOINT statements.
    """
    user = "" if tenant.user_id is None else str(int(tenant.user_id))
    role = tenant.role or ""
    if role and role not in _TENANT_ROLES:
        raise ValueError(f"unknown tenant role {role!r}")
    begin = "BEGIN READ ONLY" if readonly else "BEGIN"
    return (
        f"{begin}; SELECT set_config('app.user_id', '{user}', true), "
        f"set_config('app.user_role', '{role}', true)"
    )


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who a transaction runs for: RLS policies read these two settings."""

    user_id: int | None
    role: Literal["superuser", "owner"] | None

    @classmethod
    def system(cls) -> Tenant:
        """Background services (ingest, sync, maintenance) see every vehicle."""
        return cls(None, "superuser")

    @classmethod
    def superuser(cls, user_id: int) -> Tenant:
        return cls(user_id, "superuser")

    @classmethod
    def owner(cls, user_id: int) -> Tenant:
        return cls(user_id, "owner")

    @classmethod
    def anonymous(cls) -> Tenant:
        """No context: every tenant table answers with no rows."""
        return cls(None, None)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset on release: nothing beyond asyncpg's own rollback of an open transaction.

    The default reset (RESET ALL, UNLISTEN *, CLOSE ALL, advisory unlock) costs a round trip per
    request; this code never changes session state outside a transaction (the tenant context is
    transaction-local) except for `SESSION_SETTINGS` when a connection opens, which must last, and it
    keeps per-backend temp staging tables on purpose.
    """


# Settings of every pooled session, applied by `SET` when a connection opens (not as startup parameters, which a
# connection pooler such as PgBouncer refuses unless told to ignore them). `backend_flush_after`: a backend
# that writes out dirty buffers (the ingest writers evict them by the gigabyte: a day of positions does not fit
# in shared_buffers) asks the kernel to start writing every 256 kB, as the checkpointer does by default on
# Linux, instead of leaving gigabytes of dirty pages in the page cache. Without it, commits on ext4 waited for
# that backlog (truncating the staging tables, the WAL fsync): half-load ACK p99 over 250 ms in 2 of 10 runs,
# 1 of 16 with it (docs/INGEST.md, third pass). A user setting: no superuser needed, and it applies to a
# configured server too.
SESSION_SETTINGS = {"backend_flush_after": "256kB"}
_SET_SESSION = "; ".join(f"SET {name} = '{value}'" for name, value in SESSION_SETTINGS.items())


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(_SET_SESSION)
    conn.add_query_logger(record_query)
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


# --- the ingest writer's connections ----------------------------------------------------------------------------
# The writer COPYs rows straight into partitions (fleet.db.queries.ingest.store_batch_direct), and binary COPY
# encodes each value with the connection's codec for the column's type. Its rows carry times as float epoch
# seconds and JSON as pre-serialised text: asyncpg's own timestamptz encoder wants a datetime (building one and
# encoding it costs ~1 us a value, two per record), and the pool's json codecs would serialise the text again.
# So the writer has a pool of its own (`Database.open_writer_pool`) whose connections keep asyncpg's jsonb codec
# (text in, as is) and encode timestamptz from floats as well as datetimes.
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_UNIX = 946_684_800.0
_MICROSECOND = timedelta(microseconds=1)
_PG_INFINITY = 0x7FFF_FFFF_FFFF_FFFF
_PG_MINUS_INFINITY = -0x8000_0000_0000_0000


def encode_timestamptz(value: float | datetime) -> tuple[int]:
    """Microseconds since 2000-01-01 UTC, from epoch seconds or a datetime (naive: local time, as asyncpg).

    Epoch seconds are converted as `to_timestamp(float8)` does (subtract the epoch difference, scale, round
    half to even), so a time written here and the same time written through `to_timestamp()` compare equal.
    """
    if isinstance(value, datetime):
        return ((value.astimezone(UTC) - _PG_EPOCH) // _MICROSECOND,)
    return (round((value - _PG_EPOCH_UNIX) * 1_000_000.0),)


def decode_timestamptz(value: tuple[int]) -> datetime:
    """An aware UTC datetime, as asyncpg returns (infinities as datetime.max / datetime.min)."""
    microseconds = value[0]
    if microseconds == _PG_INFINITY:
        return datetime.max.replace(tzinfo=UTC)
    if microseconds == _PG_MINUS_INFINITY:
        return datetime.min.replace(tzinfo=UTC)
    return _PG_EPOCH + timedelta(microseconds=microseconds)


async def use_writer_codecs(conn: asyncpg.Connection) -> None:
    """Give ``conn`` the writer's codecs: `timestamptz` from epoch seconds or datetimes (jsonb keeps asyncpg's)."""
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=encode_timestamptz,
        decoder=decode_timestamptz,
        format="tuple",
    )


async def _init_writer_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(_SET_SESSION)
    conn.add_query_logger(record_query)
    await use_writer_codecs(conn)


class FairAcquire:
    """A pool's connections handed out in the order callers asked for them.

    asyncpg's pool queues waiters in an `asyncio.Queue`, which is not fair: a waiter woken for a released
    connection can lose it to a caller whose turn to run comes first, and then waits again at the back of
    the queue. Under load a few requests wait many turns: with 20 clients on 10 connections, `GET /vehicles`
    had a p99 2-4.5x its p50 (docs/PERFORMANCE.md). A FIFO semaphore as large as the pool, taken before the
    pool and given back after, hands a released connection to the longest waiter (`asyncio.Semaphore`
    passes the permit to its first waiter and makes newcomers queue while anyone waits), and the pool
    always has a connection idle for whoever holds a permit.
    """

    def __init__(self, pool: asyncpg.Pool, size: int) -> None:
        self.pool = pool
        self.turns = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        waited = time.perf_counter()
        await self.turns.acquire()
        try:
            async with self.pool.acquire() as conn:
                POOL_ACQUIRE.observe(time.perf_counter() - waited)
                yield conn
        finally:
            self.turns.release()


class Database:
    """Owns the embedded server (when used), the migrations and the runtime pool.

    `Database.replica(settings, url)` is the read-only variant for `DATABASE_READ_URL`: a pool on a
    streaming replica, no embedded server, no migrations (the schema, roles and RLS policies replicate).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._embedded: EmbeddedPostgres | None = None
        self._pool: asyncpg.Pool | None = None
        self._queue: FairAcquire | None = None  # the pool's connections, first come first served
        self._writer_pool: asyncpg.Pool | None = None  # the ingest writer's own (open_writer_pool)
        self._writer_queue: FairAcquire | None = None
        self.owner_dsn: str | None = None
        self.app_dsn: str | None = None
        self.read_only = False

    @classmethod
    def replica(cls, settings: Settings, url: str) -> Database:
        """A read pool on `url` (a hot standby, or any server holding the same data)."""
        db = cls(settings)
        db.app_dsn = url
        db.read_only = True
        return db

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self, migrate_schema: bool | None = None, pool: bool = True) -> None:
        """Resolve the server (embedded or configured), apply migrations, open the `fleet_app` pool."""
        if self.read_only:
            await self._open_pool("fleet-read")
            await self._refuse_rls_bypass()
            return
        settings = self.settings
        dsn = settings.owner_dsn()
        if dsn is None:
            self._embedded = EmbeddedPostgres(settings.data_dir / "pg")
            dsn = await asyncio.to_thread(self._embedded.start)
        self.owner_dsn = dsn
        if migrate_schema if migrate_schema is not None else settings.db_migrate_on_start:
            await self.upgrade()
        if settings.database_app_url:
            self.app_dsn = settings.database_app_url
        else:
            password = settings.db_app_password.get_secret_value() if settings.db_app_password else None
            self.app_dsn = with_user(dsn, APP_ROLE, password)
        if pool:
            await self._open_pool("fleet")

    async def _create_pool(self, application_name: str, size: int, min_size: int, init: Any) -> asyncpg.Pool:
        try:
            pool = await asyncpg.create_pool(
                self.app_dsn,
                min_size=min_size,
                max_size=size,
                init=init,
                reset=_keep_session,
                command_timeout=60,
                server_settings={"application_name": application_name},
            )
        except (OSError, asyncpg.PostgresError) as err:
            what = "the read replica (DATABASE_READ_URL)" if self.read_only else f"as {APP_ROLE}"
            raise DatabaseUnavailable(f"cannot connect {what}: {err}") from err
        watch_pool(pool)
        return pool

    async def _open_pool(self, application_name: str) -> None:
        settings = self.settings
        self._pool = await self._create_pool(
            application_name, settings.db_pool_max, settings.db_pool_min, _init_connection
        )
        self._queue = FairAcquire(self._pool, settings.db_pool_max)

    async def open_writer_pool(self, size: int) -> None:
        """Open the ingest writer's pool of ``size`` connections (see `encode_timestamptz`); `writer()` uses it."""
        if self._writer_queue is None and self.app_dsn is not None and not self.read_only:
            self._writer_pool = await self._create_pool(
                "fleet-ingest-writer", size, 0, _init_writer_connection
            )
            self._writer_queue = FairAcquire(self._writer_pool, size)

    async def _refuse_rls_bypass(self) -> None:
        """The read pool must be as confined as the primary's: a role that bypasses RLS is refused."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT current_user AS name, rolsuper OR rolbypassrls AS bypass, pg_is_in_recovery() AS standby"
                " FROM pg_roles WHERE rolname = current_user"
            )
        if row is None or row["bypass"]:
            await self.close()
            name = row["name"] if row is not None else "an unknown role"
            raise ConfigError(
                f"DATABASE_READ_URL connects as {name}, a role that bypasses row-level security; "
                f"connect as {APP_ROLE}"
            )
        log.info("read_replica_connected", role=row["name"], standby=row["standby"])

    async def upgrade(self, revision: str = "head") -> None:
        """Apply migrations with the owner connection and set the runtime roles' passwords."""
        assert self.owner_dsn is not None, "start() resolves the server first"
        passwords = {}
        if self.settings.db_app_password is not None and not self.settings.database_app_url:
            passwords[APP_ROLE] = self.settings.db_app_password.get_secret_value()
        if self.settings.db_grafana_password is not None:
            passwords[GRAFANA_ROLE] = self.settings.db_grafana_password.get_secret_value()
        await asyncio.to_thread(migrate.upgrade, self.owner_dsn, revision, passwords)

    async def close(self) -> None:
        """Close the pools (waiting for in-flight transactions), then stop the embedded server."""
        for pool in (self._writer_pool, self._pool):
            if pool is not None:
                forget_pool(pool)
                try:
                    await asyncio.wait_for(pool.close(), timeout=10)
                except TimeoutError:
                    log.warning("db_pool_close_timeout")
                    pool.terminate()
        self._pool = self._writer_pool = None
        self._queue = self._writer_queue = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None

    # --- the query path -------------------------------------------------------------------------
    @asynccontextmanager
    async def tenant(
        self, tenant: Tenant, readonly: bool = False, *, queue: FairAcquire | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction whose RLS context is `tenant` (READ ONLY on a replica)."""
        queue = queue or self._queue
        if queue is None:
            raise DatabaseUnavailable("the database pool is not open")
        async with queue.connection() as conn:
            # BEGIN and the context travel in one simple-query round trip (one per request saved).
            await conn.execute(_begin_statement(tenant, readonly or self.read_only))
            try:
                yield conn
            except BaseException:
                if not conn.is_closed():
                    # A query still in flight (cancellation) makes this fail: the pool's release then
                    # rolls back or discards the connection.
                    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                        await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    def system(self) -> Any:
        """Shortcut for `tenant(Tenant.system())`, the context of background services."""
        return self.tenant(Tenant.system())

    @property
    def has_writer_pool(self) -> bool:
        return self._writer_queue is not None

    def writer(self) -> Any:
        """`system()` on the ingest writer's pool (`open_writer_pool`), or on the main pool when it is not open."""
        return self.tenant(Tenant.system(), queue=self._writer_queue)

    async def ping(self) -> bool:
        """True when a query round-trips through the pool."""
        if self._queue is None:
            return False
        try:
            async with asyncio.timeout(2), self._queue.connection() as conn:
                return bool(await conn.fetchval("SELECT 1"))
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False

    @property
    def pool_stats(self) -> dict[str, int]:
        if self._pool is None:
            return {"size": 0, "idle": 0}
        return {"size": self._pool.get_size(), "idle": self._pool.get_idle_size()}
