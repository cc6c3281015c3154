"""The live bus: small JSON events ("new positions for device X / vehicle Y") from writers to viewers.

Four implementations behind one interface (DESIGN.md §2):

* :class:`PostgresBus` (default) - ``pg_notify`` to publish, one dedicated ``LISTEN`` connection per process
  to receive, so any API process sees what any ingest process stored.
* :class:`RedisBus` (``REDIS_URL`` set) - Redis pub/sub, same semantics.
* :class:`NatsBus` (``NATS_URL`` set, wins over ``REDIS_URL``) - core NATS pub/sub (no JetStream: the bus
  is best-effort, persistence would only replay stale positions). Measured against the other two in
  ``bench/bench_bus.py``; the figures and the choice are in docs/SCALING.md.
* :class:`InProcessBus` - delivery inside one process only (tests, tools, or a bus-less deployment).

The bus is best-effort by design: the database is the source of truth, a viewer that misses an event
catches up with a query. So publishing never blocks the caller for long, and every subscription has a
bounded queue that drops its oldest events when the consumer lags (counted in
``fleet_bus_events_dropped_total``).

Wire format: a message on a channel is a JSON array of payloads. Publishers pack many small events into
one message (``publish_many``) because a NOTIFY or PUBLISH per event would cost a round trip each;
subscribers receive the payloads one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import structlog
from prometheus_client import Counter

if TYPE_CHECKING:
    from fleet.config import Settings
    from fleet.db import Database
    from fleet.runtime import Runtime

log = structlog.get_logger(__name__)

# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; stay below with room for the array brackets.
MAX_MESSAGE_BYTES = 7900
# Events a subscriber may fall behind by before the oldest are dropped.
SUBSCRIPTION_QUEUE_SIZE = 1000
CHANNEL_PREFIX = "fleet."
RECONNECT_MIN_SEC = 0.5
RECONNECT_MAX_SEC = 15.0

BUS_PUBLISHED = Counter("fleet_bus_events_published_total", "Events published on the live bus", ["backend"])
BUS_RECEIVED = Counter(
    "fleet_bus_events_received_total", "Events delivered to local subscribers", ["backend"]
)
BUS_DROPPED = Counter(
    "fleet_bus_events_dropped_total", "Events dropped (slow subscriber or bus down)", ["backend"]
)


def channel_name(topic: str) -> str:
    """Return the backend channel of a topic (same name on PostgreSQL and Redis)."""
    if not topic or len(topic) > 48 or not all(c.isalnum() or c in "._:-" for c in topic):
        raise ValueError(f"invalid bus topic {topic!r}")
    return CHANNEL_PREFIX + topic


# Payload encoding: orjson (the ingest role packs one payload per device and batch). Datetimes and dataclasses
# go through ``default=str`` as with json.dumps; anything orjson refuses (integers beyond 64 bits...) falls
# back to the standard library.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS


def _encode_payload(payload: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(payload, default=str, option=_ORJSON_OPTIONS)
    except TypeError:
        return json.dumps(payload, separators=(",", ":"), default=str).encode()


def pack_messages(payloads: Iterable[dict[str, Any]], limit: int = MAX_MESSAGE_BYTES) -> list[str]:
    """Pack payloads into JSON arrays of at most ``limit`` bytes each (a larger single payload is dropped)."""
    messages: list[str] = []
    current: list[bytes] = []
    size = 2
    for payload in payloads:
        text = _encode_payload(payload)
        length = len(text) + 1
        if length + 2 > limit:
            log.warning("bus_payload_too_large", bytes=length)
            continue
        if current and size + length > limit:
            messages.append((b"[" + b",".join(current) + b"]").decode())
            current, size = [], 2
        current.append(text)
        size += length
    if current:
        messages.append((b"[" + b",".join(current) + b"]").decode())
    return messages


def unpack_message(message: str | bytes) -> list[Any]:
    """Return the payloads of one wire message (a JSON array; a bare object counts as one payload)."""
    try:
        data = json.loads(message)
    except ValueError:
        log.warning("bus_message_not_json")
        return []
    return data if isinstance(data, list) else [data]


class Subscription:
    """One consumer's view of a topic: an async iterator over payloads with a bounded backlog."""

    def __init__(self, bus: LiveBus, topic: str, maxsize: int = SUBSCRIPTION_QUEUE_SIZE) -> None:
        self.bus = bus
        self.topic = topic
        self.dropped = 0
        self._items: deque[Any] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def deliver(self, payload: Any) -> None:
        """Queue one payload (called by the bus); drops the oldest when the consumer lags."""
        if self._closed:
            return
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
            BUS_DROPPED.labels(self.bus.backend).inc()
        self._items.append(payload)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, within: float | None = None) -> Any:
        """Return the next payload (TimeoutError after ``within`` seconds; StopAsyncIteration when closed)."""
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, within)
            finally:
                self._waiter = None
        return self._items.popleft()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self.get()

    async def close(self) -> None:
        """Stop receiving; a consumer blocked in ``get`` ends its iteration."""
        if self._closed:
            return
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        await self.bus._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class LiveBus(ABC):
    """Publish small JSON payloads on named topics; subscribe to a topic as an async iterator."""

    backend = "abstract"

    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = {}

    async def start(self) -> None:  # noqa: B027 - optional hook: backends without a connection need none
        """Connect what the backend needs (idempotent)."""

    async def close(self) -> None:
        """Disconnect and end every subscription."""
        for subs in list(self._subscriptions.values()):
            for sub in list(subs):
                await sub.close()

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish one payload."""
        await self.publish_many(topic, [payload])

    @abstractmethod
    async def publish_many(self, topic: str, payloads: list[dict[str, Any]]) -> None:
        """Publish several payloads, packed into as few backend messages as possible."""

    async def subscribe(self, topic: str, maxsize: int = SUBSCRIPTION_QUEUE_SIZE) -> Subscription:
        """Return a subscription receiving every payload published on ``topic`` from now on."""
        channel_name(topic)  # validate
        sub = Subscription(self, topic, maxsize)
        subs = self._subscriptions.setdefault(topic, set())
        first = not subs
        subs.add(sub)
        if first:
            await self._listen(topic)
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.topic)
        if not subs or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._subscriptions[sub.topic]
            await self._unlisten(sub.topic)

    def _dispatch(self, topic: str, payloads: list[Any]) -> None:
        subs = self._subscriptions.get(topic)
        if not subs:
            return
        for payload in payloads:
            for sub in subs:
                sub.deliver(payload)
        BUS_RECEIVED.labels(self.backend).inc(len(payloads) * len(subs))

    async def _listen(self, topic: str) -> None:  # noqa: B027 - optional hook: in-process needs no listener
        """Start receiving ``topic`` from the backend (first local subscriber)."""

    async def _unlisten(self, topic: str) -> None:  # noqa: B027 - optional hook, as _listen
        """Stop receiving ``topic`` (last local subscriber gone)."""


class InProcessBus(LiveBus):
    """Delivery within this process only."""

    backend = "memory"

    async def publish_many(self, topic: str, payloads: list[dict[str, Any]]) -> None:
        channel_name(topic)
        if not payloads:
            return
        BUS_PUBLISHED.labels(self.backend).inc(len(payloads))
        # Round-trip through JSON so subscribers see exactly what a networked bus would deliver.
        for message in pack_messages(payloads):
            self._dispatch(topic, unpack_message(message))


class PostgresBus(LiveBus):
    """LISTEN/NOTIFY. Publishing goes through the pool; receiving uses one dedicated connection.

    The listening connection runs no query on tenant data (only LISTEN/UNLISTEN), which is why it may
    live outside ``Database.tenant``: pooled connections cannot hold a LISTEN (the pool resets them).
    """

    backend = "postgres"

    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db
        self._conn: asyncpg.Connection | None = None
        self._listening: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = asyncio.Lock()

    async def publish_many(self, topic: str, payloads: list[dict[str, Any]]) -> None:
        channel = channel_name(topic)
        if not payloads:
            return
        messages = pack_messages(payloads)
        try:
            async with self._db.system() as conn:
                await conn.execute("SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m", channel, messages)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
            BUS_DROPPED.labels(self.backend).inc(len(payloads))
            log.warning("bus_publish_failed", backend=self.backend, error=str(err))
            return
        BUS_PUBLISHED.labels(self.backend).inc(len(payloads))

    async def start(self) -> None:
        self._closing = False

    async def close(self) -> None:
        self._closing = True
        await super().close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._disconnect()

    async def _listen(self, topic: str) -> None:
        async with self._lock:
            self._listening.add(topic)
            if self._conn is not None and not self._conn.is_closed():
                await self._add_listener(self._conn, topic)
            elif self._task is None or self._task.done():
                await self._connect_once()
                if self._conn is None:
                    self._task = asyncio.create_task(self._reconnect_loop(), name="bus-postgres-listen")

    async def _unlisten(self, topic: str) -> None:
        async with self._lock:
            self._listening.discard(topic)
            conn = self._conn
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await conn.remove_listener(channel_name(topic), self._on_notify)

    async def _add_listener(self, conn: asyncpg.Connection, topic: str) -> None:
        await conn.add_listener(channel_name(topic), self._on_notify)

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self._dispatch(channel[len(CHANNEL_PREFIX) :], unpack_message(payload))

    def _on_terminated(self, _conn: object) -> None:
        self._conn = None
        if not self._closing and self._listening and (self._task is None or self._task.done()):
            log.warning("bus_listener_lost", backend=self.backend)
            self._task = asyncio.get_running_loop().create_task(
                self._reconnect_loop(), name="bus-postgres-listen"
            )

    async def _connect_once(self) -> None:
        dsn = self._db.app_dsn
        if dsn is None:
            return
        try:
            conn = await asyncpg.connect(dsn, server_settings={"application_name": "fleet-bus"})
        except (OSError, asyncpg.PostgresError) as err:
            log.warning("bus_listener_connect_failed", backend=self.backend, error=str(err))
            return
        try:
            for topic in sorted(self._listening):
                await self._add_listener(conn, topic)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("bus_listener_connect_failed", backend=self.backend, error=str(err))
            conn.terminate()
            return
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn

    async def _reconnect_loop(self) -> None:
        delay = RECONNECT_MIN_SEC
        while not self._closing and self._listening and self._conn is None:
            await asyncio.sleep(delay)
            async with self._lock:
                await self._connect_once()
            if self._conn is not None:
                log.info("bus_listener_restored", backend=self.backend)
                return
            delay = min(delay * 2, RECONNECT_MAX_SEC)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()


class RedisBus(LiveBus):
    """Redis pub/sub: PUBLISH through a shared client, one PubSub connection reading every topic."""

    backend = "redis"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._client: Any = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._client is None:
            import redis.asyncio as redis

            self._client = redis.Redis.from_url(self._url, health_check_interval=30)

    async def close(self) -> None:
        await super().close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    async def publish_many(self, topic: str, payloads: list[dict[str, Any]]) -> None:
        from redis.exceptions import RedisError

        channel = channel_name(topic)
        if not payloads:
            return
        await self.start()
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for message in pack_messages(payloads):
                    pipe.publish(channel, message)
                await pipe.execute()
        except (RedisError, OSError) as err:
            BUS_DROPPED.labels(self.backend).inc(len(payloads))
            log.warning("bus_publish_failed", backend=self.backend, error=str(err))
            return
        BUS_PUBLISHED.labels(self.backend).inc(len(payloads))

    async def _listen(self, topic: str) -> None:
        await self.start()
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(channel_name(topic))
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_loop(), name="bus-redis-read")

    async def _unlisten(self, topic: str) -> None:
        async with self._lock:
            if self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(channel_name(topic))

    async def _read_loop(self) -> None:
        from redis.exceptions import RedisError

        delay = RECONNECT_MIN_SEC
        while self._subscriptions:
            pubsub = self._pubsub
            try:
                message = await pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as err:
                log.warning("bus_listener_lost", backend=self.backend, error=str(err))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SEC)
                continue
            delay = RECONNECT_MIN_SEC
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            self._dispatch(channel[len(CHANNEL_PREFIX) :], unpack_message(message["data"]))


class NatsBus(LiveBus):
    """Core NATS pub/sub: one client connection per process publishes and holds every subscription.

    The client reconnects by itself (forever) and re-subscribes after a reconnect; what is published while
    it is disconnected waits in its bounded pending buffer, beyond which publishing fails and is counted.
    """

    backend = "nats"

    def __init__(self, url: str, name: str = "fleet") -> None:
        super().__init__()
        self._url = url
        self._name = name
        self._client: Any = None
        self._subs: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self._client is not None:
                return
            import nats

            self._client = await nats.connect(
                self._url,
                name=self._name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RECONNECT_MIN_SEC,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )

    async def close(self) -> None:
        await super().close()
        client, self._client = self._client, None
        self._subs.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.drain(), timeout=5)
            if not client.is_closed:
                with contextlib.suppress(Exception):
                    await client.close()

    async def publish_many(self, topic: str, payloads: list[dict[str, Any]]) -> None:
        from nats.errors import Error as NatsError

        subject = channel_name(topic)
        if not payloads:
            return
        try:
            await self.start()
            for message in pack_messages(payloads):
                await self._client.publish(subject, message.encode())
        except (NatsError, OSError, TimeoutError) as err:
            BUS_DROPPED.labels(self.backend).inc(len(payloads))
            log.warning("bus_publish_failed", backend=self.backend, error=str(err))
            return
        BUS_PUBLISHED.labels(self.backend).inc(len(payloads))

    async def _listen(self, topic: str) -> None:
        await self.start()
        async with self._lock:
            if topic not in self._subs:
                self._subs[topic] = await self._client.subscribe(channel_name(topic), cb=self._on_message)

    async def _unlisten(self, topic: str) -> None:
        async with self._lock:
            sub = self._subs.pop(topic, None)
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        self._dispatch(msg.subject[len(CHANNEL_PREFIX) :], unpack_message(msg.data))

    async def _on_error(self, err: Exception) -> None:
        log.warning("bus_error", backend=self.backend, error=str(err))

    async def _on_disconnected(self) -> None:
        if self._client is not None:
            log.warning("bus_listener_lost", backend=self.backend)

    async def _on_reconnected(self) -> None:
        log.info("bus_listener_restored", backend=self.backend)


# Payloads waiting for the bus per publisher; beyond this the oldest are dropped (the bus is best-effort).
MAX_PENDING_PAYLOADS = 20000


class LivePublisher:
    """Publishes payloads on one topic after the writer's commits, without ever making the writer wait.

    At most one publish is in flight; payloads added meanwhile are coalesced into the next one. Used by
    ingestion (new positions, tracker events) and the sync service (positions of pull vehicles, alarms).
    """

    def __init__(self, bus: LiveBus, topic: str) -> None:
        channel_name(topic)  # validate
        self._bus = bus
        self._topic = topic
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def add(self, payloads: list[dict[str, Any]]) -> None:
        """Queue payloads for publishing (never blocks)."""
        self._pending.extend(payloads)
        overflow = len(self._pending) - MAX_PENDING_PAYLOADS
        if overflow > 0:
            del self._pending[:overflow]
            self.dropped += overflow
            BUS_DROPPED.labels(self._bus.backend).inc(overflow)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"bus-publish-{self._topic}"
            )

    async def _run(self) -> None:
        while self._pending:
            payloads, self._pending = self._pending, []
            try:
                await self._bus.publish_many(self._topic, payloads)
            except Exception as err:  # a broken bus must not break the writer that feeds it
                log.warning("bus_publish_failed", topic=self._topic, error=str(err), payloads=len(payloads))

    async def close(self, grace: float = 5.0) -> None:
        """Wait (up to `grace` seconds) for what is queued to go out."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, grace)


def create_bus(settings: Settings, db: Database | None) -> LiveBus:
    """Return the bus the configuration asks for: NATS with NATS_URL, Redis with REDIS_URL, else PostgreSQL,
    else in-process."""
    if settings.nats_url:
        return NatsBus(settings.nats_url)
    if settings.redis_url:
        return RedisBus(settings.redis_url)
    if db is not None:
        return PostgresBus(db)
    return InProcessBus()


async def ensure_bus(runtime: Runtime) -> tuple[LiveBus, bool]:
    """Return ``runtime.extras["bus"]``, creating and starting it when absent; True when created here.

    The role that created the bus closes it when it stops; other roles only use it.
    """
    bus = runtime.extras.get("bus")
    if isinstance(bus, LiveBus):
        return bus, False
    bus = create_bus(runtime.settings, runtime.db)
    await bus.start()
    runtime.extras["bus"] = bus
    return bus, True
