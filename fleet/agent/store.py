"""The agent's local SQLite ring buffer: samples, channels and alarms.

Two connections share one WAL-mode database file: a writer (simulator, ingest, pruning; serialised by an
asyncio lock so transactions never interleave) and a query-only reader for the API. In WAL mode a reader never
waits for the writer, so a 50,000-row page is served while the simulator keeps writing.

Samples live in a ``WITHOUT ROWID`` table whose primary key is ``(time, channel_id)``: the table itself is the
time index, a window read is one ordered range scan, and a (channel, time) pair is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import aiosqlite

from fleet.agent.channels import Channel
from fleet.agent.errors import StoreUnavailable, UnknownChannel
from fleet.agent.times import check_time_range

T = TypeVar("T")

AlarmLevel = Literal["info", "warning", "critical"]
ALARM_LEVELS: tuple[AlarmLevel, ...] = ("info", "warning", "critical")

# executemany batches: big enough to amortise the thread hop, small enough to keep one transaction short.
WRITE_BATCH_ROWS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    time INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (time, channel_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS latest (
    channel_id INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    value REAL NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS channels (
    channel_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    unit TEXT NOT NULL,
    phys_min REAL NOT NULL,
    phys_max REAL NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS alarms (
    alarm_id INTEGER PRIMARY KEY,
    channel_id INTEGER,
    level TEXT NOT NULL CHECK (level IN ('info', 'warning', 'critical')),
    message TEXT NOT NULL,
    raised_at INTEGER NOT NULL,
    resolved_at INTEGER,
    -- agent clock at the last change, so a late-written resolution still reaches the server
    changed_at INTEGER NOT NULL,
    source TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS alarms_raised_at ON alarms (raised_at);
CREATE INDEX IF NOT EXISTS alarms_resolved_at ON alarms (resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS alarms_changed_at ON alarms (changed_at);
"""


class Sample(NamedTuple):
    """One measurement: channel, epoch milliseconds, finite value."""

    channel_id: int
    time: int
    value: float


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm raised on the vehicle; ``alarm_id`` is stable and unique per vehicle."""

    alarm_id: int
    channel_id: int | None
    level: AlarmLevel
    message: str
    raised_at: int
    resolved_at: int | None = None


@dataclass(frozen=True, slots=True)
class DataPage:
    """Rows of one /data window; when truncated, ``next_from`` is where the next page starts."""

    rows: list[tuple[int, int, float]]
    truncated: bool
    next_from: int | None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What an append did: rows stored, and rows ignored because (channel_id, time) was already stored."""

    written: int
    duplicates: int


class AgentStore:
    """The ring buffer; open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._channel_ids: frozenset[int] = frozenset()
        self._row_count = 0
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> AgentStore:
        """Open (creating when needed) the database at ``path`` in WAL mode."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        reader: aiosqlite.Connection | None = None
        try:
            await writer.execute("PRAGMA journal_mode = WAL")
            # NORMAL survives a process crash; a power cut may lose the last commits but never the file.
            await writer.execute("PRAGMA synchronous = NORMAL")
            await writer.executescript(_SCHEMA)
            reader = await _connect(path)
            await reader.execute("PRAGMA query_only = 1")
            store = cls(path, writer, reader)
            await store._load_counters()
        except BaseException:
            for conn in (reader, writer):
                if conn is not None:
                    await conn.close()
            raise
        return store

    async def close(self) -> None:
        """Close both connections; later calls raise StoreUnavailable."""
        self._closed = True
        try:
            await self._reader.close()
        finally:
            await self._writer.close()

    @property
    def row_count(self) -> int:
        """Number of samples in the buffer."""
        return self._row_count

    @property
    def channel_ids(self) -> frozenset[int]:
        """Ids of the declared channels."""
        return self._channel_ids

    async def ping(self) -> bool:
        """Return True when the database answers a trivial query."""
        try:
            await self._fetch("SELECT 1")
        except StoreUnavailable:
            return False
        return True

    # -- channels ---------------------------------------------------------------------------------------

    async def upsert_channels(self, channels: Iterable[Channel]) -> None:
        """Declare channels, replacing the name, unit and range of ids already declared."""
        params = [(c.channel_id, c.name, c.unit, c.phys_min, c.phys_max) for c in channels]
        await self._write(
            lambda: self._rowcount(
                "INSERT INTO channels VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel_id) DO UPDATE SET"
                " name = excluded.name, unit = excluded.unit,"
                " phys_min = excluded.phys_min, phys_max = excluded.phys_max",
                params,
            )
        )
        self._channel_ids = self._channel_ids | {p[0] for p in params}

    async def channels(self) -> list[Channel]:
        """Return every declared channel, by id."""
        rows = await self._fetch(
            "SELECT channel_id, name, unit, phys_min, phys_max FROM channels ORDER BY channel_id"
        )
        return [Channel(*row) for row in rows]

    # -- samples ----------------------------------------------------------------------------------------

    async def append_rows(self, rows: Iterable[Sample | tuple[int, int, float]]) -> WriteResult:
        """Store samples (a repeated (channel_id, time) keeps the first value), in batched transactions.

        Every channel must be declared, every value finite and every time within the contract's range;
        otherwise nothing of the call is stored.
        """
        batch = [Sample(int(ch), int(t), float(v)) for ch, t, v in rows]
        unknown = sorted({s.channel_id for s in batch} - self._channel_ids)
        if unknown:
            raise UnknownChannel(unknown)
        if not all(math.isfinite(s.value) for s in batch):
            raise ValueError("sample values must be finite")
        if batch:
            check_time_range(min(s.time for s in batch))
            check_time_range(max(s.time for s in batch))
        written = 0
        for start in range(0, len(batch), WRITE_BATCH_ROWS):
            chunk = batch[start : start + WRITE_BATCH_ROWS]
            inserted = await self._write(functools.partial(self._insert_samples, chunk))
            self._row_count += inserted
            written += inserted
        return WriteResult(written=written, duplicates=len(batch) - written)

    async def _insert_samples(self, chunk: Sequence[Sample]) -> int:
        newest: dict[int, Sample] = {}
        for sample in chunk:
            known = newest.get(sample.channel_id)
            if known is None or sample.time > known.time:
                newest[sample.channel_id] = sample
        inserted = await self._rowcount(
            "INSERT OR IGNORE INTO samples (time, channel_id, value) VALUES (?, ?, ?)",
            [(s.time, s.channel_id, s.value) for s in chunk],
        )
        # "latest" only moves forward, so an ignored duplicate never replaces the stored newest value.
        await self._rowcount(
            "INSERT INTO latest VALUES (?, ?, ?) ON CONFLICT (channel_id) DO UPDATE SET"
            " time = excluded.time, value = excluded.value WHERE excluded.time > latest.time",
            list(newest.values()),
        )
        return inserted

    async def read_window(self, from_ms: int, to_ms: int, limit: int) -> DataPage:
        """Return samples with ``from_ms <= time < to_ms`` ordered by (time, channel_id), at most ``limit``.

        A page never splits one timestamp: when the limit falls inside a timestamp, the page ends before it
        and ``next_from`` is that timestamp, so following ``next_from`` yields every row exactly once. Only if
        a single timestamp holds more rows than ``limit`` is that timestamp returned whole, beyond the limit.
        """
        rows = await self._fetch(
            "SELECT channel_id, time, value FROM samples WHERE time >= ? AND time < ?"
            " ORDER BY time, channel_id LIMIT ?",
            (from_ms, to_ms, limit + 1),
        )
        if len(rows) <= limit:
            return DataPage(rows=rows, truncated=False, next_from=None)
        boundary = rows[limit][1]
        cut = limit
        while cut > 0 and rows[cut - 1][1] == boundary:
            cut -= 1
        if cut > 0:
            return DataPage(rows=rows[:cut], truncated=True, next_from=boundary)
        whole = await self._fetch(
            "SELECT channel_id, time, value FROM samples WHERE time = ? ORDER BY channel_id", (boundary,)
        )
        more = await self._fetch(
            "SELECT 1 FROM samples WHERE time > ? AND time < ? LIMIT 1", (boundary, to_ms)
        )
        return DataPage(rows=whole, truncated=bool(more), next_from=boundary + 1 if more else None)

    async def latest(self) -> list[tuple[int, int, float]]:
        """Return the newest sample of every channel that has one, by channel id."""
        return await self._fetch("SELECT channel_id, time, value FROM latest ORDER BY channel_id")

    async def data_span(self) -> tuple[int | None, int | None]:
        """Return the times of the oldest and newest samples (None when the buffer is empty)."""
        # Two scalar subqueries, because SQLite's O(log n) min/max shortcut needs min() or max() alone.
        rows = await self._fetch("SELECT (SELECT min(time) FROM samples), (SELECT max(time) FROM samples)")
        oldest, newest = rows[0]
        return oldest, newest

    # -- alarms -----------------------------------------------------------------------------------------

    async def upsert_alarms(self, alarms: Iterable[Alarm], *, changed_at: int | None, source: str) -> int:
        """Store new alarms and resolutions of stored ones; return how many alarms changed.

        ``changed_at`` is the agent's clock at the write; None takes each alarm's own latest time, which is
        right for a writer whose alarm times are the time of writing (the simulator).

        A repeated ``alarm_id`` only adds ``resolved_at`` to an unresolved alarm: level, message, channel and
        raise time are fixed when an alarm is first stored, so the server never sees an alarm change under it.
        """
        params = [
            (
                a.alarm_id,
                a.channel_id,
                a.level,
                a.message,
                a.raised_at,
                a.resolved_at,
                changed_at if changed_at is not None else max(a.raised_at, a.resolved_at or a.raised_at),
                source,
            )
            for a in alarms
        ]
        return await self._write(
            lambda: self._rowcount(
                "INSERT INTO alarms VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alarm_id) DO UPDATE SET"
                " resolved_at = excluded.resolved_at, changed_at = excluded.changed_at"
                " WHERE alarms.resolved_at IS NULL AND excluded.resolved_at IS NOT NULL"
                " AND excluded.resolved_at >= alarms.raised_at",
                params,
            )
        )

    async def resolve_open_alarms(self, source: str, resolved_at: int) -> int:
        """Resolve every open alarm written by ``source`` (a simulator restart forgets its conditions)."""
        return await self._write(
            lambda: self._rowcount(
                "UPDATE alarms SET resolved_at = max(?, raised_at), changed_at = ?"
                " WHERE resolved_at IS NULL AND source = ?",
                [(resolved_at, resolved_at, source)],
            )
        )

    async def alarms_in_window(self, from_ms: int, to_ms: int, limit: int) -> tuple[list[Alarm], bool]:
        """Return alarms raised, resolved or changed in ``[from_ms, to_ms)``, and whether ``limit`` cut."""
        rows = await self._fetch(
            "SELECT alarm_id, channel_id, level, message, raised_at, resolved_at FROM alarms"
            " WHERE (raised_at >= :f AND raised_at < :t) OR (resolved_at >= :f AND resolved_at < :t)"
            " OR (changed_at >= :f AND changed_at < :t)"
            " ORDER BY raised_at, alarm_id LIMIT :n",
            {"f": from_ms, "t": to_ms, "n": limit + 1},
        )
        alarms = [Alarm(*row) for row in rows]
        return alarms[:limit], len(alarms) > limit

    # -- retention --------------------------------------------------------------------------------------

    async def prune(self, *, older_than: int, max_rows: int) -> int:
        """Delete samples older than ``older_than`` and beyond the newest ``max_rows``; return rows deleted.

        Resolved alarms whose last change is older than ``older_than`` go too; open alarms always stay.
        """
        deleted = await self._write(lambda: self._prune(older_than, max_rows))
        self._row_count -= deleted
        return deleted

    async def _prune(self, older_than: int, max_rows: int) -> int:
        deleted = await self._rowcount("DELETE FROM samples WHERE time < ?", [(older_than,)])
        excess = self._row_count - deleted - max_rows
        if excess > 0:
            # The oldest rows lead the primary key, so this subquery reads exactly `excess` index entries.
            deleted += await self._rowcount(
                "DELETE FROM samples WHERE (time, channel_id) IN"
                " (SELECT time, channel_id FROM samples ORDER BY time, channel_id LIMIT ?)",
                [(excess,)],
            )
        await self._rowcount(
            "DELETE FROM latest WHERE time < coalesce((SELECT min(time) FROM samples), 9223372036854775807)",
            [()],
        )
        await self._rowcount(
            "DELETE FROM alarms WHERE resolved_at IS NOT NULL AND resolved_at < ? AND changed_at < ?",
            [(older_than, older_than)],
        )
        return deleted

    # -- plumbing ---------------------------------------------------------------------------------------

    async def _load_counters(self) -> None:
        rows = await self._fetch("SELECT count(*) FROM samples")
        self._row_count = rows[0][0]
        ids = await self._fetch("SELECT channel_id FROM channels")
        self._channel_ids = frozenset(row[0] for row in ids)

    async def _rowcount(self, sql: str, params: Sequence[Sequence[object]]) -> int:
        async with self._writer.executemany(sql, params) as cursor:
            return cursor.rowcount

    async def _transaction(self, body: Callable[[], Awaitable[T]]) -> T:
        """Run ``body`` on the writer inside BEGIN IMMEDIATE .. COMMIT; the caller holds the write lock."""
        await self._writer.execute("BEGIN IMMEDIATE")
        try:
            result = await body()
        except BaseException:
            # A broken connection cannot roll back either; the original error is the one worth raising.
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._writer.rollback()
            raise
        await self._writer.commit()
        return result

    async def _fetch(self, sql: str, params: Sequence[object] | dict[str, object] = ()) -> list[Any]:
        rows = await self._guard(lambda: self._reader.execute_fetchall(sql, params))
        return list(rows)

    async def _write(self, body: Callable[[], Awaitable[T]]) -> T:
        async with self._write_lock:
            return await self._guard(lambda: self._transaction(body))

    async def _guard(self, op: Callable[[], Awaitable[T]]) -> T:
        if self._closed:
            raise StoreUnavailable("the agent database is closed")
        try:
            return await op()
        except (sqlite3.Error, ValueError) as err:
            # aiosqlite raises ValueError once its connection is gone.
            raise StoreUnavailable(f"the agent database failed: {err}") from err


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: no implicit transactions; the store writes BEGIN/COMMIT itself.
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=5.0)
    return conn
