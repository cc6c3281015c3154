"""Sending device commands: queued in the database, written to a tracker when it is online here.

The dispatcher knows which devices have queued commands (a sweep every ``SWEEP_SEC`` and the ``commands``
bus topic), and when a connection of such a device is ready (identified, and able to send data) it takes
the oldest queued command, encodes it with the connection's codec session, claims it in the database
(``queued`` → ``sent``, once) and hands the bytes to the connection, which applies the protocol's
:class:`fleet.protocol.base.CommandRules` (e.g. Navtelecom holds its ACKs until the answer). One command
per connection is outstanding at a time; the next follows its answer.

Outcomes: the answer → ``answered`` (``failed`` when the device says it did not execute it); no answer
within the protocol's timeout → ``expired``; the connection closed before the answer → ``failed`` (the
device may have executed it: a sent command is never sent again). Queued commands past their expiry
are expired by the sweep. Every change is published on bus topic ``commands``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from fleet.db.queries import device_commands as commands_q
from fleet.device_commands import BUS_TOPIC, COMMANDS_TOTAL, bus_payload, command_from_payload
from fleet.errors import DatabaseUnavailable
from fleet.protocol.base import CommandAnswer, UnsupportedCommand

if TYPE_CHECKING:
    from fleet.ingest.connection import DeviceConnection
    from fleet.ingest.service import IngestService

log = structlog.get_logger(__name__)

SWEEP_SEC = 5.0
# A command still "sent" this long after the longest answer timeout lost the process that sent it.
ORPHAN_MARGIN_SEC = 60.0
_DB_ERRORS = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError, DatabaseUnavailable)


class CommandDispatcher:
    """Sends queued commands to connected devices of one ingest service."""

    def __init__(self, service: IngestService) -> None:
        self.service = service
        self._waiting: set[int] = set()  # device ids with queued commands
        self._busy: set[int] = set()  # device ids being dispatched right now
        self._timers: dict[int, asyncio.TimerHandle] = {}  # command id -> answer timeout
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loops.append(asyncio.create_task(self._sweep(), name="ingest-commands-sweep"))
        if self.service.bus is not None:
            self._loops.append(asyncio.create_task(self._listen(), name="ingest-commands-bus"))

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- hooks from connections ------------------------------------------------------------------------------
    def connection_ready(self, conn: DeviceConnection) -> None:
        """A device's connection may take commands now: send the next queued one, if any."""
        device = conn.device
        if device is None or device.id not in self._waiting or conn.command_id is not None:
            return
        if device.id in self._busy or conn.closing:
            return
        self._busy.add(device.id)
        self._spawn(self._dispatch(conn, device.id))

    def answered(self, conn: DeviceConnection, answer: CommandAnswer) -> None:
        """An answer arrived: it settles the command outstanding on the connection (if any)."""
        command_id = conn.command_id
        if command_id is None:
            return  # unsolicited, or the answer to a command that timed out: kept as a raw frame only
        self._cancel_timer(command_id)
        conn.command_settled()
        status = "failed" if answer.failed else "answered"
        self._spawn(self._settle(conn.protocol, command_id, status, answer=answer.text, conn=conn))

    def connection_lost(self, conn: DeviceConnection) -> None:
        command_id = conn.command_id
        if command_id is None:
            return
        conn.command_id = None
        self._cancel_timer(command_id)
        error = "the connection closed before the answer (the device may have executed it)"
        self._spawn(self._settle(conn.protocol, command_id, "failed", error=error))

    def _cancel_timer(self, command_id: int) -> None:
        timer = self._timers.pop(command_id, None)
        if timer is not None:
            timer.cancel()

    def _timed_out(self, conn: DeviceConnection, command_id: int, seconds: float) -> None:
        self._timers.pop(command_id, None)
        if conn.command_id != command_id:
            return
        conn.command_settled()
        self._spawn(
            self._settle(
                conn.protocol, command_id, "expired", error=f"no answer within {seconds:g} s", conn=conn
            )
        )

    # --- database side -------------------------------------------------------------------------------------------
    async def _dispatch(self, conn: DeviceConnection, device_id: int) -> None:
        try:
            while not conn.closing and conn.command_id is None:
                async with self.service.db.system() as db:
                    row = await commands_q.next_queued(db, device_id)
                    if row is None:
                        self._waiting.discard(device_id)
                        return
                    try:
                        data = conn.session.encode_command(command_from_payload(row["type"], row["payload"]))
                    except (UnsupportedCommand, KeyError, ValueError) as err:
                        settled = await commands_q.settle(
                            db, row["id"], "failed", error=f"cannot encode: {err}"
                        )
                        await self._announce(conn.protocol, settled)
                        continue
                    claimed = await commands_q.claim(db, row["id"])
                if claimed is None:
                    continue  # another process took it, or it expired meanwhile
                rules = conn.listener.spec.commands
                if not conn.send_command(claimed["id"], data, hold_acks=rules.hold_acks):
                    async with self.service.db.system() as db:
                        await commands_q.requeue(db, claimed["id"])
                    return
                log.info(
                    "ingest_command_sent",
                    command_id=claimed["id"],
                    device_id=device_id,
                    type=claimed["type"],
                    protocol=conn.protocol,
                )
                timeout = self.service.settings.device_command_answer_timeout_sec or rules.answer_timeout_sec
                self._timers[claimed["id"]] = self.service.loop.call_later(
                    timeout, self._timed_out, conn, claimed["id"], timeout
                )
                await self._announce(conn.protocol, claimed)
                return
        except _DB_ERRORS as err:
            log.warning("ingest_command_dispatch_failed", device_id=device_id, error=str(err))
        finally:
            self._busy.discard(device_id)

    async def _settle(
        self,
        protocol: str,
        command_id: int,
        status: str,
        *,
        answer: str | None = None,
        error: str | None = None,
        conn: DeviceConnection | None = None,
    ) -> None:
        try:
            async with self.service.db.system() as db:
                row = await commands_q.settle(db, command_id, status, answer=answer, error=error)
        except _DB_ERRORS as err:
            log.warning("ingest_command_settle_failed", command_id=command_id, status=status, error=str(err))
            return
        log.info("ingest_command_settled", command_id=command_id, status=status, protocol=protocol)
        await self._announce(protocol, row)
        if conn is not None and not conn.closing:
            self.connection_ready(conn)  # the next one, if any

    async def _announce(self, protocol: str, row: Any) -> None:
        if row is None:
            return
        COMMANDS_TOTAL.labels(protocol, row["status"]).inc()
        bus = self.service.bus
        if bus is not None:
            try:
                await bus.publish(BUS_TOPIC, bus_payload(row))
            except Exception as err:  # the bus is best-effort; the database has the truth
                log.warning("ingest_command_publish_failed", error=str(err))

    async def _sweep(self) -> None:
        registry = self.service.registry
        orphan_after = ORPHAN_MARGIN_SEC + max(
            (listener.spec.commands.answer_timeout_sec for listener in self.service.listeners), default=60.0
        )
        while True:
            try:
                async with self.service.db.system() as db:
                    expired = await commands_q.expire_overdue(db, orphan_after)
                    waiting = await commands_q.devices_with_queued(db)
            except _DB_ERRORS as err:
                log.warning("ingest_command_sweep_failed", error=str(err))
            else:
                for row in expired:
                    await self._announce(row["protocol"], row)
                self._waiting = set(waiting)
                for device_id in waiting:
                    conn = registry.connection_of(device_id)
                    if conn is not None:
                        self._ready_if_possible(conn)
            await asyncio.sleep(SWEEP_SEC)

    def _ready_if_possible(self, conn: Any) -> None:
        if getattr(conn, "may_send_telemetry", False):
            self.connection_ready(conn)

    async def _listen(self) -> None:
        bus = self.service.bus
        assert bus is not None
        registry = self.service.registry
        subscription = await bus.subscribe(BUS_TOPIC)
        with contextlib.suppress(StopAsyncIteration):
            async with subscription:
                async for payload in subscription:
                    if not isinstance(payload, dict) or payload.get("status") != "queued":
                        continue
                    device_id = payload.get("device_id")
                    if not isinstance(device_id, int):
                        continue
                    self._waiting.add(device_id)
                    conn = registry.connection_of(device_id)
                    if conn is not None:
                        self._ready_if_possible(conn)
