"""Security events of the device port: logged, counted, and kept in ``security_events`` for superusers.

An event is something the device port refused because it looked like an attack on a tracker's identity:
a second connection claiming an online tracker from another address (``takeover_refused``), or a tracker
connecting from outside its address allow-list (``device_address_refused``). Each attempt is counted
(``fleet_ingest_security_events_total{kind}``) and logged; attempts of one kind, device and address within
one flush interval become one row with a ``count``, written in one statement off the connection's path.
The table therefore grows with distinct (kind, device, address) triples per interval, not with the
attempt rate, and the queue of rows waiting for the database is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import Counter

from fleet.db.queries.security_events import SecurityEventRow, insert_events
from fleet.ops.jobs import RETRYABLE

if TYPE_CHECKING:
    from fleet.db import Database

log = structlog.get_logger(__name__)

SECURITY_EVENTS = Counter(
    "fleet_ingest_security_events_total",
    "Device-port security events (refused takeovers, trackers outside their allow-list), by kind",
    ["kind"],
)
SECURITY_EVENTS_DROPPED = Counter(
    "fleet_ingest_security_events_dropped_total",
    "Security events counted and logged but not stored (the queue for the database was full)",
)

FLUSH_INTERVAL_SEC = 2.0
MAX_PENDING_ROWS = 10_000  # distinct (kind, device, address) rows waiting for the database
# Log lines per kind and interval; the rest of a burst is summarised in the next line (all are counted).
LOG_BURST = 20
LOG_INTERVAL_SEC = 10.0


class SecurityEvents:
    """Collects security events of one ingest service and stores them in batches."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: dict[tuple[str, int | None, str], SecurityEventRow] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._log_window: dict[str, tuple[float, int, int]] = {}  # kind -> (window start, logged, quiet)
        self.counts: dict[str, int] = {}
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ingest-security-events")

    def record(
        self,
        kind: str,
        *,
        address: str,
        peer: str,
        protocol: str,
        imei: str | None,
        device_id: int | None,
        **details: Any,
    ) -> None:
        """Count, log (bursts summarised) and queue one event for the database."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        SECURITY_EVENTS.labels(kind).inc()
        self._log(kind, peer=peer, protocol=protocol, imei=imei, device_id=device_id, **details)
        now = datetime.now(UTC)
        key = (kind, device_id, address)
        row = self._pending.get(key)
        if row is not None:
            self._pending[key] = SecurityEventRow(
                kind, row.first_at, now, row.count + 1, device_id, imei, protocol, peer, row.details
            )
            return
        if len(self._pending) >= MAX_PENDING_ROWS:
            self.dropped += 1
            SECURITY_EVENTS_DROPPED.inc()
            return
        self._pending[key] = SecurityEventRow(
            kind, now, now, 1, device_id, imei, protocol, peer, {"address": address, **details}
        )

    def _log(self, kind: str, **fields: Any) -> None:
        loop_time = asyncio.get_running_loop().time()
        started, logged, quiet = self._log_window.get(kind, (loop_time, 0, 0))
        if loop_time - started >= LOG_INTERVAL_SEC:
            started, logged, quiet = loop_time, 0, quiet
        if logged < LOG_BURST:
            log.warning(f"ingest_{kind}", **fields, unlogged_before=quiet or None)
            self._log_window[kind] = (started, logged + 1, 0)
        else:
            self._log_window[kind] = (started, logged, quiet + 1)

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_SEC)
            self._wake.clear()
            await self.flush()
        await self.flush()  # what was recorded while the last flush ran

    async def flush(self) -> None:
        """Write what is pending; on a database failure keep it for the next attempt (bounded)."""
        if not self._pending:
            return
        rows, self._pending = list(self._pending.values()), {}
        try:
            async with self._db.system() as conn:
                await insert_events(conn, rows)
        except RETRYABLE as err:
            log.warning("ingest_security_events_store_failed", rows=len(rows), error=str(err))
            for row in rows:
                key = (row.kind, row.device_id, str(row.details.get("address", "")))
                if key not in self._pending and len(self._pending) < MAX_PENDING_ROWS:
                    self._pending[key] = row

    async def close(self, grace: float = 10.0) -> None:
        """Stop the flusher after it wrote what is left (cancelled only after ``grace`` seconds)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
