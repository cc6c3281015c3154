"""Which device is on which connection: IMEI lookups (cached, batched) and the one-connection rule.

A handshake needs a decision before its answer: known device, new device to register (policy
``register``), or refused (policy ``reject``). Cache hits decide synchronously. Misses are collected for
a couple of milliseconds and resolved with one query for all of them, so ten thousand trackers
reconnecting at once after a restart cost a few queries. Positive entries expire after
``CACHE_TTL_SEC`` (a device deleted or re-assigned meanwhile is seen again soon; rows are joined with
``devices`` at write time anyway), refusals after ``NEGATIVE_TTL_SEC`` (a device added by an admin is
accepted on its next attempt without a restart, and a refused device reconnecting in a loop cannot
turn into a query per attempt).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import asyncpg
import structlog

from fleet.db.queries.ingest import find_devices, register_devices
from fleet.errors import DatabaseUnavailable
from fleet.ingest.addresses import IPNetwork, parse_networks
from fleet.ingest.stats import DEVICES_REGISTERED, IngestStats
from fleet.ops.jobs import RETRYABLE

if TYPE_CHECKING:
    from fleet.db import Database

log = structlog.get_logger(__name__)

CACHE_TTL_SEC = 300.0
NEGATIVE_TTL_SEC = 30.0
LOOKUP_DELAY_SEC = 0.002  # how long a cache miss waits for companions to share its query
LOOKUP_BATCH = 1000


@dataclass(slots=True)
class DeviceInfo:
    """A device as the listener needs it."""

    id: int
    imei: str
    vehicle_id: int | None
    expires: float = 0.0
    allowed_networks: tuple[IPNetwork, ...] | None = None  # None: any address (devices.allowed_networks)


class Closable(Protocol):
    def close(self, reason: str) -> None: ...


REFUSED: Literal["refused"] = "refused"
Policy = Literal["register", "reject"]


class DeviceRegistry:
    """IMEI → device cache with batched resolution, and device → its current connection."""

    def __init__(
        self,
        db: Database,
        policy: Policy,
        stats: IngestStats,
        policies: dict[str, Policy] | None = None,
    ) -> None:
        self._db = db
        self.policy = policy  # UNKNOWN_DEVICE_POLICY
        self.policies: dict[str, Policy] = dict(policies or {})  # per protocol (UNKNOWN_DEVICE_POLICIES)
        self._stats = stats
        self._by_imei: dict[str, DeviceInfo] = {}
        self._by_id: dict[int, DeviceInfo] = {}
        self._refused: dict[tuple[str, str], float] = {}  # (IMEI, protocol) -> until
        self._waiting: dict[str, asyncio.Future[DeviceInfo | None]] = {}
        self._protocol_of: dict[str, str] = {}  # protocol a waiting IMEI spoke (for registration)
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._owners: dict[int, Closable] = {}

    # --- lookups -----------------------------------------------------------------------------------------
    def policy_for(self, protocol: str) -> Policy:
        """The unknown-device policy of a protocol (its own, else the general one)."""
        return self.policies.get(protocol, self.policy)

    def set_policies(self, policy: Policy, policies: dict[str, Policy]) -> None:
        """Follow reloaded settings; cached refusals go (a device may be accepted now)."""
        self.policy = policy
        self.policies = dict(policies)
        self._refused.clear()

    def cached(self, imei: str, protocol: str = "") -> DeviceInfo | Literal["refused"] | None:
        """Return the cached decision for an IMEI spoken in ``protocol``, or None to ask the database."""
        now = time.monotonic()
        info = self._by_imei.get(imei)
        if info is not None and info.expires > now:
            return info
        key = (imei, protocol)
        refused_until = self._refused.get(key)
        if refused_until is not None:
            if refused_until > now:
                return REFUSED
            del self._refused[key]
        return None

    def resolve(self, imei: str, protocol: str) -> asyncio.Future[DeviceInfo | None]:
        """Return a future of the device (None: refused by policy); raises DatabaseUnavailable on failure.

        ``protocol`` is what the device speaks: a device registered by the ``register`` policy gets it.
        """
        future = self._waiting.get(imei)
        if future is not None:
            return future
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting[imei] = future
        self._protocol_of[imei] = protocol
        if self._flush_handle is None:
            delay = 0 if len(self._waiting) >= LOOKUP_BATCH else LOOKUP_DELAY_SEC
            self._flush_handle = loop.call_later(delay, self._start_flush)
        return future

    def _start_flush(self) -> None:
        self._flush_handle = None
        task = asyncio.get_running_loop().create_task(self._flush(), name="ingest-registry-lookup")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        while self._waiting:
            imeis = list(self._waiting)[:LOOKUP_BATCH]
            futures = [self._waiting.pop(imei) for imei in imeis]
            protocols = {imei: self._protocol_of.pop(imei) for imei in imeis}
            try:
                rows, created = await self._query(imeis, protocols)
            except RETRYABLE as err:
                log.error(
                    "ingest_device_lookup_failed", devices=len(imeis), error=str(err) or type(err).__name__
                )
                failure = DatabaseUnavailable(f"device lookup failed: {err}")
                for future in futures:
                    if not future.done():
                        future.set_exception(failure)
                        future.exception()  # retrieved here: a connection closed meanwhile never reads it
                continue
            now = time.monotonic()
            found = {row["imei"]: row for row in rows}
            for imei, future in zip(imeis, futures, strict=True):
                row = found.get(imei)
                if row is None:
                    self._refused[(imei, protocols[imei])] = now + NEGATIVE_TTL_SEC
                    result = None
                else:
                    result = self._remember(row, now)
                if not future.done():
                    future.set_result(result)
            for imei in created:
                self._stats.devices_registered += 1
                DEVICES_REGISTERED.inc()
                log.info(
                    "ingest_device_registered",
                    imei=imei,
                    device_id=found[imei]["id"] if imei in found else None,
                )

    async def _query(
        self, imeis: list[str], protocols: dict[str, str]
    ) -> tuple[list[asyncpg.Record], list[str]]:
        async with self._db.system() as conn:
            registering = [imei for imei in imeis if self.policy_for(protocols[imei]) == "register"]
            if registering:
                before = {row["imei"] for row in await find_devices(conn, imeis)}
                rows: list[asyncpg.Record] = []
                by_protocol: dict[str, list[str]] = {}
                for imei in registering:
                    if imei not in before:
                        by_protocol.setdefault(protocols[imei], []).append(imei)
                for protocol, new in by_protocol.items():
                    rows.extend(await register_devices(conn, new, protocol))
                if before:
                    rows = [*rows, *await find_devices(conn, sorted(before))]
                return rows, [row["imei"] for row in rows if row["imei"] not in before]
            return await find_devices(conn, imeis), []

    def _remember(self, row: asyncpg.Record, now: float) -> DeviceInfo:
        device_id, imei = row["id"], row["imei"]
        info = self._by_id.get(device_id)
        if info is None or info.imei != imei:
            info = DeviceInfo(device_id, imei, row["vehicle_id"])
            self._by_id[device_id] = info
        info.vehicle_id = row["vehicle_id"]
        networks = row["allowed_networks"]
        info.allowed_networks = parse_networks(networks) if networks else None
        info.expires = now + CACHE_TTL_SEC
        self._by_imei[imei] = info
        return info

    def note_vehicle(self, device_id: int, vehicle_id: int | None) -> None:
        """Record the vehicle a committed batch found for a device (assignments change at runtime)."""
        info = self._by_id.get(device_id)
        if info is not None:
            info.vehicle_id = vehicle_id

    def vehicle_of(self, device_id: int) -> int | None:
        info = self._by_id.get(device_id)
        return info.vehicle_id if info else None

    def imei_of(self, device_id: int) -> str | None:
        info = self._by_id.get(device_id)
        return info.imei if info else None

    # --- one connection per device ------------------------------------------------------------------------
    def claim(self, device_id: int, connection: Closable) -> Closable | None:
        """Make ``connection`` the device's connection; return the one it replaces (to be closed)."""
        previous = self._owners.get(device_id)
        self._owners[device_id] = connection
        return previous if previous is not connection else None

    def release(self, device_id: int, connection: Any) -> None:
        if self._owners.get(device_id) is connection:
            del self._owners[device_id]

    def connection_of(self, device_id: int) -> Closable | None:
        """Return the device's current connection in this process (None: not connected here)."""
        return self._owners.get(device_id)

    @property
    def connected_devices(self) -> int:
        return len(self._owners)

    async def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        self._protocol_of.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
