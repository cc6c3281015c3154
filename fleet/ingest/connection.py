"""One device connection: an asyncio Protocol feeding the pure codec and queuing its work for the writer.

Everything runs in transport callbacks - no task and no await per connection or per frame. Bytes go to
the codec session as they arrive; each output is handled in order:

* handshake - identify the device through the registry (a cache hit answers at once; a miss suspends the
  connection until the batched lookup returns, keeping later outputs in order), apply the unknown-device
  policy, claim the device (an older connection of the same device is closed), send ``*<S``;
* negotiation - answer now, persist versions and mask with the next batch;
* telemetry - build rows, queue them with the ACK; the ACK leaves only after the commit;
* rejected frame (bad checksum...) - keep the raw bytes, no answer, keep the connection;
* fatal (unframable, oversized) - log peer, IMEI and a hex excerpt, keep the excerpt, close.

Outgoing bytes go through an ordered outbox: a handshake or negotiation answer queued behind ACKs still
waiting for their commit is sent after them, so a device never sees answers out of order.

Reading pauses for four independent reasons (flags): the global writer backpressure, too many frames of
this connection waiting for a commit, the peer not reading our answers (transport write buffer full), and
a pending device lookup. It resumes when none is left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import structlog

from fleet.db.queries.ingest import DeviceStateUpdate
from fleet.ingest.registry import REFUSED, DeviceInfo
from fleet.ingest.writer import COMMITTED, WAITING, Pending
from fleet.protocol.navtelecom import (
    CommandAnswer,
    DeviceSession,
    Dialect,
    Fatal,
    KeepAlive,
    Output,
    Rejected,
    Reply,
    ReplyKind,
    Telemetry,
)

if TYPE_CHECKING:
    from fleet.ingest.service import IngestService

log = structlog.get_logger(__name__)

PAUSE_GLOBAL = 1  # writer queue over its high-water mark
PAUSE_INFLIGHT = 2  # this connection has too many frames waiting for a commit
PAUSE_WRITE = 4  # the peer does not read what we send
PAUSE_IDENTIFY = 8  # waiting for the device lookup of a handshake

# A device sends one frame and waits for its ACK; a few in flight cover pipelining clients. A connection
# that pushes more without waiting is paused, so it cannot take more than its share of the writer.
MAX_INFLIGHT_FRAMES = 32
RESUME_INFLIGHT_FRAMES = 16
# Consecutive frames without a single good one before the connection is considered hostile.
MAX_CONSECUTIVE_REJECTS = 64
# Rejections are logged on the first and then every Nth per connection (the counter has them all).
REJECT_LOG_EVERY = 100
EXCERPT_BYTES = 32
SEEN_UPDATE_INTERVAL_SEC = 60.0
PROTOCOL_NTCB = "navtelecom"
PROTOCOL_TEXT = "navtelecom_text"


def frame_type_of(raw: bytes) -> str:
    """Return a short label of a raw frame for `raw_frames.frame_type` (from its first bytes only)."""
    if raw[:1] == b"@":
        return "ntcb"
    if raw[:1] == b"~" and len(raw) > 1 and 0x41 <= raw[1] <= 0x5A:
        return chr(raw[1])
    if raw[:1] == b"\x7f":
        return "ping"
    return "unknown"


class DeviceConnection(asyncio.Protocol):
    """Protocol instance for one TCP connection (created by the listener per accepted socket)."""

    __slots__ = (
        "_backlog",
        "_pending_chunks",
        "close_reason",
        "closing",
        "connected_at",
        "device",
        "eof",
        "inflight",
        "last_rx",
        "last_seen_sent",
        "outbox",
        "partial_since",
        "pause_flags",
        "peer",
        "rejects",
        "service",
        "session",
        "transport",
    )

    def __init__(self, service: IngestService) -> None:
        self.service = service
        settings = service.settings
        self.session = DeviceSession(
            allow_text=settings.text_dialect_enabled, field100_size=settings.flex_field100_size
        )
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.device: DeviceInfo | None = None
        self.outbox: deque[bytes | Pending] = deque()
        now = service.loop.time()
        self.connected_at = now
        self.last_rx = now
        self.partial_since: float | None = None
        self.pause_flags = 0
        self._backlog: list[tuple[list[Output], float]] | None = None
        self._pending_chunks: list[tuple[list[Output], float]] = []
        self.closing = False
        self.close_reason: str | None = None
        self.eof = False
        self.rejects = 0
        self.inflight = 0
        self.last_seen_sent = 0.0

    # --- asyncio callbacks ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        self.service.admit(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = self.service.loop.time()
        self.last_rx = now
        try:
            outputs = self.session.feed(data)
            if outputs:
                self._process(outputs, now)
        except Exception as err:  # a codec or row bug must cost this connection only, never the listener
            log.exception("ingest_connection_error", peer=self.peer, imei=self.imei, error=str(err))
            self.service.stats.decode_error("internal_error")
            self.close("internal_error")
            return
        inner = self.session.session
        if inner is not None and inner.buffered:
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    def eof_received(self) -> bool | None:
        # A peer that half-closes still gets the ACKs of frames being committed; close once they left.
        if any(not isinstance(item, bytes) for item in self.outbox):
            self.eof = True
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.close_reason = "peer_closed" if exc is None else "connection_reset"
            self.service.stats.closed(self.close_reason)
        self.outbox.clear()
        self._backlog = None
        self.service.forget(self)

    def pause_writing(self) -> None:
        self.pause(PAUSE_WRITE)

    def resume_writing(self) -> None:
        self.resume(PAUSE_WRITE)

    # --- state ------------------------------------------------------------------------------------------------
    @property
    def imei(self) -> str | None:
        return self.device.imei if self.device else self.session.imei

    @property
    def may_send_telemetry(self) -> bool:
        """True once the connection can send data (FLEX negotiated, or a text device identified).

        Until then it only exchanges a handshake and a negotiation - a few dozen bytes, under the
        handshake timeout - so backpressure leaves it alone: a reconnect storm under load still logs in.
        """
        inner = self.session.session
        if inner is None:
            return False
        if self.session.dialect is Dialect.TEXT:
            return self.device is not None
        return getattr(inner, "layout", None) is not None

    @property
    def protocol_name(self) -> str:
        return PROTOCOL_TEXT if self.session.dialect is Dialect.TEXT else PROTOCOL_NTCB

    def pause(self, flag: int) -> None:
        if not self.pause_flags and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.pause_flags |= flag

    def resume(self, flag: int) -> None:
        if not self.pause_flags & flag:
            return
        self.pause_flags &= ~flag
        if not self.pause_flags and self.transport is not None and not self.transport.is_closing():
            # Time spent paused is ours, not the device's: restart its idle and partial-frame clocks.
            now = self.service.loop.time()
            self.last_rx = now
            if self.partial_since is not None:
                self.partial_since = now
            self.transport.resume_reading()

    def close(self, reason: str, *, abort: bool = False) -> None:
        """Close the connection (queued ACKs are not sent: their frames will be retransmitted)."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        self.service.stats.closed(reason)
        self._backlog = None
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()

    def check_timeouts(self, now: float) -> None:
        """Close the connection if it overstayed a limit (called by the listener's periodic sweep)."""
        if self.closing or self.pause_flags & (PAUSE_GLOBAL | PAUSE_IDENTIFY):
            return
        settings = self.service.settings
        if self.device is None and now - self.connected_at > settings.ingest_handshake_timeout_sec:
            log.warning(
                "ingest_handshake_timeout", peer=self.peer, seconds=settings.ingest_handshake_timeout_sec
            )
            self.close("handshake_timeout", abort=True)
        elif now - self.last_rx > settings.ingest_idle_timeout_sec:
            log.info("ingest_idle_timeout", peer=self.peer, imei=self.imei)
            self.close("idle_timeout")
        elif (
            self.partial_since is not None
            and now - self.partial_since > settings.ingest_handshake_timeout_sec
        ):
            # A frame trickling in for this long is a slow-loris, not a tracker on a slow link.
            inner = self.session.session
            log.warning(
                "ingest_partial_frame_timeout",
                peer=self.peer,
                imei=self.imei,
                buffered=inner.buffered if inner is not None else 0,
            )
            self.close("partial_frame_timeout", abort=True)

    # --- output handling -------------------------------------------------------------------------------------
    def _process(self, outputs: list[Output], now: float, start: int = 0) -> None:
        if self._backlog is not None:
            self._backlog.append((outputs[start:], now))
            return
        for position in range(start, len(outputs)):
            if self.closing:
                return
            output = outputs[position]
            kind = type(output)
            if kind is Telemetry:
                assert isinstance(output, Telemetry)
                if self.device is None and not self._identify_for_text(output, outputs, position, now):
                    return
                self._telemetry(output, now)
            elif kind is Reply:
                assert isinstance(output, Reply)
                if output.kind is ReplyKind.HANDSHAKE:
                    if not self._handshake(output, outputs, position, now):
                        return
                else:
                    self._negotiation(output)
            elif kind is KeepAlive:
                self.service.stats.frame("ping")
            elif kind is Rejected:
                assert isinstance(output, Rejected)
                self._rejected(output)
            elif kind is CommandAnswer:
                assert isinstance(output, CommandAnswer)
                self._answer(output)
            elif kind is Fatal:
                assert isinstance(output, Fatal)
                self._fatal(output)

    def _suspend(self, future: asyncio.Future[Any], resume: Any) -> None:
        self._backlog = []
        self.pause(PAUSE_IDENTIFY)
        future.add_done_callback(resume)

    def _handshake(self, reply: Reply, outputs: list[Output], position: int, now: float) -> bool:
        """Answer a handshake; False when suspended on a device lookup (the rest waits in the backlog)."""
        imei = self.session.imei
        assert imei is not None
        decision = self.service.registry.cached(imei)
        if decision is None:
            future = self.service.registry.resolve(imei)
            self._suspend(future, partial(self._handshake_resolved, reply, outputs, position, now))
            return False
        self._accept(reply, imei, None if decision == REFUSED else decision)
        return True

    def _handshake_resolved(
        self, reply: Reply, outputs: list[Output], position: int, now: float, future: asyncio.Future[Any]
    ) -> None:
        if not self._resume_backlog(future):
            return
        imei = self.session.imei
        assert imei is not None
        self._accept(reply, imei, future.result())
        self._replay(outputs, position + 1, now)

    def _identify_for_text(
        self, telemetry: Telemetry, outputs: list[Output], position: int, now: float
    ) -> bool:
        """Text frames carry the IMEI in every frame: the first one identifies the connection."""
        imei = self.session.imei
        if self.session.dialect is not Dialect.TEXT or imei is None:
            self._store_raw(telemetry.raw, "rejected", "telemetry before handshake", None)
            log.warning(
                "ingest_telemetry_before_handshake",
                peer=self.peer,
                excerpt=telemetry.raw[:EXCERPT_BYTES].hex(),
            )
            self.service.stats.decode_error("no_handshake")
            self.close("no_handshake")
            return False
        decision = self.service.registry.cached(imei)
        if decision is None:
            future = self.service.registry.resolve(imei)
            self._suspend(future, partial(self._text_resolved, outputs, position, now))
            return False
        self._accept(None, imei, None if decision == REFUSED else decision)
        return not self.closing

    def _text_resolved(
        self, outputs: list[Output], position: int, now: float, future: asyncio.Future[Any]
    ) -> None:
        if not self._resume_backlog(future):
            return
        imei = self.session.imei
        assert imei is not None
        self._accept(None, imei, future.result())
        self._replay(outputs, position, now)

    def _resume_backlog(self, future: asyncio.Future[Any]) -> bool:
        backlog = self._backlog or []
        self._backlog = None
        self._pending_chunks = backlog
        if self.closing or future.cancelled():
            return False
        if future.exception() is not None:
            log.error("ingest_device_lookup_unavailable", peer=self.peer, imei=self.session.imei)
            self.close("registry_unavailable")
            return False
        self.resume(PAUSE_IDENTIFY)
        return True

    def _replay(self, outputs: list[Output], start: int, now: float) -> None:
        chunks = self._pending_chunks
        self._pending_chunks = []
        self._process(outputs, now, start)
        for index, (chunk, chunk_now) in enumerate(chunks):
            if self.closing:
                return
            if self._backlog is not None:  # suspended again: the rest keeps its order behind
                self._backlog.extend(chunks[index:])
                return
            self._process(chunk, chunk_now)

    def _accept(self, reply: Reply | None, imei: str, info: DeviceInfo | None) -> None:
        service = self.service
        if info is None:
            service.stats.refused("unknown_device")
            log.warning("ingest_device_refused", peer=self.peer, imei=imei, policy=service.registry.policy)
            if reply is not None:
                self._store_raw(reply.raw, "rejected", "unknown device refused by policy", "handshake")
            self.close("unknown_device")
            return
        if self.device is not None and self.device.id != info.id:
            service.registry.release(self.device.id, self)
        self.device = info
        previous = service.registry.claim(info.id, self)
        if previous is not None:
            log.info("ingest_device_reconnected", imei=imei, peer=self.peer, closing_previous=True)
            previous.close("replaced")
        negotiation = getattr(self.session.session, "negotiation", None)
        update = DeviceStateUpdate(
            info.id,
            connected_at=datetime.now(UTC),
            peer=self.peer,
            flex_protocol_version=negotiation.protocol_version if negotiation else None,
            flex_struct_version=negotiation.struct_version if negotiation else None,
            flex_mask=negotiation.mask if negotiation else None,
        )
        if reply is not None:
            self.send(reply.data)
            service.stats.frame("handshake")
            self._store_raw(reply.raw, "ok", None, "handshake", update)
        else:
            service.writer.submit(Pending(None, None, service.loop.time(), device_update=update))
        if service.writer.paused and self.may_send_telemetry:
            self.pause(PAUSE_GLOBAL)

    def _negotiation(self, reply: Reply) -> None:
        self.send(reply.data)
        self.service.stats.frame("negotiation")
        if self.service.writer.paused and self.may_send_telemetry:
            self.pause(PAUSE_GLOBAL)  # data may flow from now on: it waits like everyone else's
        negotiation = getattr(self.session.session, "negotiation", None)
        update = None
        if self.device is not None and negotiation is not None:
            update = DeviceStateUpdate(
                self.device.id,
                flex_protocol_version=negotiation.protocol_version,
                flex_struct_version=negotiation.struct_version,
                flex_mask=negotiation.mask,
            )
        self._store_raw(reply.raw, "ok", None, "negotiation", update)

    def _telemetry(self, telemetry: Telemetry, now: float) -> None:
        device = self.device
        assert device is not None
        service = self.service
        received = datetime.now(UTC)
        kind = telemetry.kind.value
        raw = telemetry.raw
        raw_row = None
        if service.settings.ingest_store_raw_frames:
            raw_row = (device.id, received, self.protocol_name, kind, self.peer, raw, "ok", None)
        update = None
        if now - self.last_seen_sent >= SEEN_UPDATE_INTERVAL_SEC:
            self.last_seen_sent = now
            update = DeviceStateUpdate(device.id, seen_at=received)
        records = len(telemetry.records)
        # Rows are built by the writer when it takes the batch: this callback stays short.
        item = Pending(
            self,
            telemetry.ack,
            now,
            raw=raw_row,
            device_update=update,
            records=records,
            nbytes=len(raw),
            telemetry=telemetry,
            device_id=device.id,
            received_at=received,
        )
        self.outbox.append(item)
        self.inflight += 1
        if self.inflight >= MAX_INFLIGHT_FRAMES:
            self.pause(PAUSE_INFLIGHT)
        self.rejects = 0
        service.stats.frame(kind, records)
        service.writer.submit(item)

    def _rejected(self, rejected: Rejected) -> None:
        stats = self.service.stats
        stats.decode_error(rejected.code.value)
        stats.frame("rejected")
        self.rejects += 1
        if self.rejects == 1 or self.rejects % REJECT_LOG_EVERY == 0:
            log.warning(
                "ingest_frame_rejected",
                peer=self.peer,
                imei=self.imei,
                code=rejected.code.value,
                reason=rejected.reason,
                consecutive=self.rejects,
                excerpt=rejected.raw[:EXCERPT_BYTES].hex(),
            )
        self._store_raw(rejected.raw, "rejected", rejected.reason, None)
        if self.rejects >= MAX_CONSECUTIVE_REJECTS:
            log.warning("ingest_too_many_invalid_frames", peer=self.peer, imei=self.imei, frames=self.rejects)
            self.close("too_many_invalid_frames")

    def _answer(self, answer: CommandAnswer) -> None:
        self.service.stats.frame("answer")
        update = None
        if answer.version is not None and self.device is not None:
            version = answer.version
            update = DeviceStateUpdate(self.device.id, firmware=f"{version.model} {version.firmware}".strip())
        self._store_raw(answer.raw, "ok", None, "answer", update)

    def _fatal(self, fatal: Fatal) -> None:
        self.service.stats.decode_error(fatal.code.value)
        log.warning(
            "ingest_connection_protocol_error",
            peer=self.peer,
            imei=self.imei,
            code=fatal.code.value,
            reason=fatal.reason,
            excerpt=fatal.excerpt.hex(),
        )
        self._store_raw(fatal.excerpt, "error", f"{fatal.code.value}: {fatal.reason}", "unframable")
        self.close(f"protocol_{fatal.code.value}")

    def _store_raw(
        self,
        data: bytes,
        outcome: str,
        error: str | None,
        frame_type: str | None,
        update: DeviceStateUpdate | None = None,
    ) -> None:
        """Queue a frame for `raw_frames` (no ACK waits for it)."""
        service = self.service
        device_id = self.device.id if self.device else None
        row = (
            device_id,
            datetime.now(UTC),
            self.protocol_name,
            frame_type or frame_type_of(data),
            self.peer,
            bytes(data),
            outcome,
            error.replace("\x00", "") if error else None,
        )
        service.writer.submit(
            Pending(None, None, service.loop.time(), raw=row, device_update=update, nbytes=len(data))
        )

    # --- sending -----------------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Send bytes now, or after the ACKs queued before them."""
        if self.closing or self.transport is None:
            return
        if self.outbox:
            self.outbox.append(data)
        else:
            self.transport.write(data)

    def flush_outbox(self) -> None:
        """Send what became sendable at the head of the outbox (called by the writer after a commit)."""
        outbox = self.outbox
        if self.closing or self.transport is None:
            outbox.clear()
            return
        transport = self.transport
        stats = self.service.stats
        now = self.service.loop.time()
        while outbox:
            head = outbox[0]
            if type(head) is bytes:
                transport.write(head)
            else:
                assert isinstance(head, Pending)
                if head.state == WAITING:
                    break
                if head.state == COMMITTED and head.ack is not None:
                    transport.write(head.ack)
                    stats.ack_latency(now - head.received)
                self.inflight -= 1
            outbox.popleft()
        if self.pause_flags & PAUSE_INFLIGHT and self.inflight <= RESUME_INFLIGHT_FRAMES:
            self.resume(PAUSE_INFLIGHT)
        if self.eof and not outbox:
            self.close("peer_closed")
