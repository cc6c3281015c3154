"""One device connection: an asyncio Protocol feeding its protocol's codec session and queuing work.

Everything runs in transport callbacks - no task and no await per connection or per frame. Bytes go to
the :class:`fleet.protocol.base.CodecSession` as they arrive; each neutral output is handled in order:

* Identify - the one identification point: the listener's :class:`fleet.ingest.admission.Admission`
  resolves the identity (a cache hit answers at once; a miss suspends the connection until the batched
  lookup returns, keeping later outputs in order), applies the unknown-device policy and the
  one-connection-per-device rule, then ``accept`` or ``refuse`` is sent;
* Reply - answer now (after the ACKs queued before it); persist the session state when it changed;
* Telemetry - queue it with its ACK for the writer; the ACK leaves only after the commit;
* CommandAnswer - settles the command waiting for it (see :mod:`fleet.ingest.commands`);
* KeepAlive, Ignored, Rejected (no answer, the connection stays) and Fatal (farewell, close).

Outgoing bytes go through an ordered outbox: an answer queued behind ACKs still waiting for their commit
is sent after them, so a device never sees answers out of order. A protocol whose commands replace an
ACK (``CommandRules.hold_acks``) gets its command written at once while the ACKs wait for the answer.

Reading pauses for four independent reasons (flags): the global writer backpressure, too many frames of
this connection waiting for a commit, the peer not reading our answers (transport write buffer full), and
a pending device lookup. It resumes when none is left.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import structlog

from fleet.db.queries.ingest import DeviceStateUpdate
from fleet.ingest.addresses import IPAddress
from fleet.ingest.admission import PROXY_INVALID, PROXY_UNEXPECTED
from fleet.ingest.proxy_protocol import ProxyHeaderError, looks_like_header
from fleet.ingest.proxy_protocol import parse as parse_proxy_header
from fleet.ingest.registry import REFUSED, DeviceInfo
from fleet.ingest.writer import COMMITTED, WAITING, Pending
from fleet.protocol.base import (
    CommandAnswer,
    Fatal,
    Identify,
    Ignored,
    KeepAlive,
    Output,
    Rejected,
    Reply,
    Telemetry,
)
from fleet.protocol.rows import RawFrameRow

if TYPE_CHECKING:
    from fleet.ingest.listener import Listener
    from fleet.ingest.service import IngestService

log = structlog.get_logger(__name__)

PAUSE_GLOBAL = 1  # writer queue over its high-water mark
PAUSE_INFLIGHT = 2  # this connection has too many frames waiting for a commit
PAUSE_WRITE = 4  # the peer does not read what we send
PAUSE_IDENTIFY = 8  # waiting for the device lookup of an identification

# A device sends one frame and waits for its ACK; a few in flight cover pipelining clients. A connection
# that pushes more without waiting is paused, so it cannot take more than its share of the writer.
MAX_INFLIGHT_FRAMES = 32
RESUME_INFLIGHT_FRAMES = 16
# The reject balance that closes a connection as hostile: each rejected frame adds one, each good
# telemetry frame takes one off (never resets it: 63 bad frames and one good one do not start afresh).
MAX_CONSECUTIVE_REJECTS = 64
# Rejected frames of an identified device are kept whole while its balance is at most this (and its
# address is not failing); beyond it, like everything from unidentified peers, as excerpts.
TRUSTED_REJECTS = 3
UNTRUSTED_OUTCOMES = frozenset({"rejected", "error"})
# Rejections are logged on the first and then every Nth per connection (the counter has them all).
REJECT_LOG_EVERY = 100
EXCERPT_BYTES = 32
SEEN_UPDATE_INTERVAL_SEC = 60.0


class DeviceConnection(asyncio.Protocol):
    """Protocol instance for one TCP connection (created by a protocol's listener per accepted socket)."""

    __slots__ = (
        "_backlog",
        "_pending_chunks",
        "ack_gate",
        "address",
        "close_reason",
        "closing",
        "command_id",
        "connected_at",
        "device",
        "eof",
        "inflight",
        "ip",
        "last_rx",
        "last_seen_sent",
        "listener",
        "outbox",
        "partial_since",
        "pause_flags",
        "peer",
        "proxy_buffer",
        "rejects",
        "service",
        "session",
        "transport",
    )

    def __init__(self, service: IngestService, listener: Listener) -> None:
        self.service = service
        self.listener = listener
        self.session = listener.spec.new_session(service.settings)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.address: str | None = None  # the key of the address rules, once counted (Admission.peer_known)
        self.ip: IPAddress | None = None
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
        self.command_id: int | None = None  # the command waiting for its answer on this connection
        # The first bytes still to judge for the PROXY protocol (b"": none read yet); None once judged.
        self.proxy_buffer: bytes | None = b""
        self.ack_gate = False  # ACKs held back until that answer (CommandRules.hold_acks)

    # --- asyncio callbacks ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        self.service.admission.admit(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = self.service.loop.time()
        self.last_rx = now
        if self.proxy_buffer is not None:
            data = self._proxy_header(data)
            if not data:
                return
        session = self.session
        try:
            outputs = session.feed(data)
            if outputs:
                self._process(outputs, now)
        except Exception as err:  # a codec or row bug must cost this connection only, never the listener
            log.exception("ingest_connection_error", peer=self.peer, imei=self.imei, error=str(err))
            self.service.stats.decode_error("internal_error", self.protocol)
            self.close("internal_error")
            return
        if session.buffered:
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    def _proxy_header(self, data: bytes) -> bytes:
        """Judge the connection's first bytes for the PROXY protocol; return the device's bytes after it.

        With ``INGEST_PROXY_PROTOCOL=1`` a header must come first: it is collected across reads, and the
        peer it names becomes ``self.peer`` before the address rules run (:meth:`Admission.peer_known`).
        Without it, a connection that starts with a PROXY signature is refused (it would otherwise reach
        the codec as a malformed frame, hiding a balancer misconfiguration).
        """
        buffered = self.proxy_buffer + data if self.proxy_buffer else data
        admission = self.service.admission
        if not self.service.settings.ingest_proxy_protocol:
            self.proxy_buffer = None
            if looks_like_header(buffered):
                admission.proxy_refused(
                    self, PROXY_UNEXPECTED, "INGEST_PROXY_PROTOCOL is 0", buffered[:EXCERPT_BYTES]
                )
                return b""
            return buffered
        try:
            header = parse_proxy_header(buffered)
        except ProxyHeaderError as err:
            self.proxy_buffer = None
            admission.proxy_refused(self, PROXY_INVALID, str(err), buffered[:EXCERPT_BYTES])
            return b""
        if header is None:
            self.proxy_buffer = buffered  # bounded: the parser refuses headers over its limits
            return b""
        self.proxy_buffer = None
        if header.peer is not None:
            self.peer = header.peer
        if not admission.peer_known(self):
            return b""
        return buffered[header.length :]

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
    def protocol(self) -> str:
        """The registry name of this connection's protocol."""
        return self.listener.spec.name

    @property
    def imei(self) -> str | None:
        return self.device.imei if self.device else self.session.identity

    @property
    def may_send_telemetry(self) -> bool:
        """True once an accepted device may send data (e.g. FLEX negotiated).

        Until then it only exchanges a login and a negotiation - a few dozen bytes, under the handshake
        timeout - so backpressure leaves it alone: a reconnect storm under load still logs in.
        """
        return self.device is not None and self.session.ready

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
        self.service.admission.connection_failed(self, reason)
        self._backlog = None
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()

    def check_timeouts(self, now: float) -> None:
        """Close the connection if it overstayed a limit (called by the service's periodic sweep)."""
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
            log.warning(
                "ingest_partial_frame_timeout",
                peer=self.peer,
                imei=self.imei,
                buffered=self.session.buffered,
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
                if self.device is None:
                    self._no_identity(output)
                    return
                self._telemetry(output, now)
            elif kind is Identify:
                assert isinstance(output, Identify)
                if not self._identify(output, outputs, position, now):
                    return
            elif kind is Reply:
                assert isinstance(output, Reply)
                self._reply(output)
            elif kind is KeepAlive:
                self.service.stats.frame("ping", protocol=self.protocol)
            elif kind is Rejected:
                assert isinstance(output, Rejected)
                self._rejected(output)
            elif kind is CommandAnswer:
                assert isinstance(output, CommandAnswer)
                self._answer(output)
            elif kind is Ignored:
                assert isinstance(output, Ignored)
                self.service.stats.frame(output.kind, protocol=self.protocol)
                self._store_raw(output.raw, "ignored", output.reason, output.kind)
            elif kind is Fatal:
                assert isinstance(output, Fatal)
                self._fatal(output)

    def _identify(self, identify: Identify, outputs: list[Output], position: int, now: float) -> bool:
        """Identify the device; False when suspended on a lookup (the rest waits in the backlog)."""
        registry = self.service.registry
        decision = registry.cached(identify.identity, self.protocol)
        if decision is None:
            future = registry.resolve(identify.identity, self.protocol)
            self._backlog = []
            self.pause(PAUSE_IDENTIFY)
            future.add_done_callback(partial(self._identity_resolved, identify, outputs, position, now))
            return False
        self._accept(identify, None if decision == REFUSED else decision)
        return not self.closing

    def _identity_resolved(
        self,
        identify: Identify,
        outputs: list[Output],
        position: int,
        now: float,
        future: asyncio.Future[Any],
    ) -> None:
        backlog = self._backlog or []
        self._backlog = None
        if self.closing or future.cancelled():
            return
        if future.exception() is not None:
            log.error("ingest_device_lookup_unavailable", peer=self.peer, imei=identify.identity)
            self.close("registry_unavailable")
            return
        self.resume(PAUSE_IDENTIFY)
        self._accept(identify, future.result())
        # Replay what arrived meanwhile, in order; a second suspension keeps the rest behind it.
        self._process(outputs, now, position + 1)
        for index, (chunk, chunk_now) in enumerate(backlog):
            if self.closing:
                return
            if self._backlog is not None:
                self._backlog.extend(backlog[index:])
                return
            self._process(chunk, chunk_now)

    def _accept(self, identify: Identify, info: DeviceInfo | None) -> None:
        service = self.service
        refusal = service.admission.identified(self, identify, info)
        if refusal is not None:
            if identify.refuse and self.transport is not None:
                self.transport.write(identify.refuse)
            if identify.raw:
                self._store_raw(identify.raw, "rejected", f"device refused: {refusal}", "handshake")
            self.close(refusal)
            return
        assert info is not None
        update = DeviceStateUpdate(
            info.id,
            connected_at=datetime.now(UTC),
            peer=self.peer,
            protocol=self.protocol,
            protocol_state=self.session.state,
        )
        if identify.accept:
            self.send(identify.accept)
        if identify.raw:
            service.stats.frame("handshake", protocol=self.protocol)
            self._store_raw(identify.raw, "ok", None, "handshake", update)
        else:
            service.writer.submit(Pending(None, None, service.loop.time(), device_update=update))
        if self.may_send_telemetry:
            self._became_ready()

    def _became_ready(self) -> None:
        if self.service.writer.paused:
            self.pause(PAUSE_GLOBAL)  # data may flow from now on: it waits like everyone else's
        self.service.commands.connection_ready(self)

    def _reply(self, reply: Reply) -> None:
        self.send(reply.data)
        self.service.stats.frame(reply.kind, protocol=self.protocol)
        update = None
        if reply.state_changed and self.device is not None:
            update = DeviceStateUpdate(self.device.id, protocol_state=self.session.state)
        self._store_raw(reply.raw, "ok", None, reply.kind, update)
        if self.may_send_telemetry:
            self._became_ready()

    def _no_identity(self, telemetry: Telemetry) -> None:
        self._store_raw(telemetry.raw, "rejected", "telemetry before handshake", None)
        log.warning(
            "ingest_telemetry_before_handshake",
            peer=self.peer,
            protocol=self.protocol,
            excerpt=telemetry.raw[:EXCERPT_BYTES].hex(),
        )
        self.service.stats.decode_error("no_handshake", self.protocol)
        self.close("no_handshake")

    def _telemetry(self, telemetry: Telemetry, now: float) -> None:
        device = self.device
        assert device is not None
        service = self.service
        received = datetime.now(UTC)
        kind = telemetry.kind
        raw = telemetry.raw
        raw_row = None
        if service.settings.ingest_store_raw_frames:
            # Every field given: a NamedTuple fills defaults more slowly (this runs once per frame).
            raw_row = RawFrameRow(
                device.id,
                received,
                self.session.archive_protocol,
                kind,
                self.peer,
                raw,
                "ok",
                None,
                None,
                None,
            )
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
            rows=self.listener.rows,
        )
        self.outbox.append(item)
        self.inflight += 1
        if self.inflight >= MAX_INFLIGHT_FRAMES:
            self.pause(PAUSE_INFLIGHT)
        if self.rejects:
            self.rejects -= 1
        service.stats.frame(kind, records, self.protocol)
        service.writer.submit(item)

    def _rejected(self, rejected: Rejected) -> None:
        stats = self.service.stats
        stats.decode_error(rejected.code, self.protocol)
        stats.frame("rejected", protocol=self.protocol)
        self.rejects += 1
        if self.rejects == 1 or self.rejects % REJECT_LOG_EVERY == 0:
            log.warning(
                "ingest_frame_rejected",
                peer=self.peer,
                imei=self.imei,
                protocol=self.protocol,
                code=str(rejected.code),
                reason=rejected.reason,
                reject_balance=self.rejects,
                excerpt=rejected.raw[:EXCERPT_BYTES].hex(),
            )
        self._store_raw(rejected.raw, "rejected", rejected.reason, None)
        if self.rejects >= MAX_CONSECUTIVE_REJECTS:
            log.warning("ingest_too_many_invalid_frames", peer=self.peer, imei=self.imei, frames=self.rejects)
            self.close("too_many_invalid_frames")

    def _answer(self, answer: CommandAnswer) -> None:
        self.service.stats.frame("answer", protocol=self.protocol)
        update = None
        if answer.firmware is not None and self.device is not None:
            update = DeviceStateUpdate(self.device.id, firmware=answer.firmware)
        self._store_raw(answer.raw, "ok", None, "answer", update)
        self.service.commands.answered(self, answer)

    def _fatal(self, fatal: Fatal) -> None:
        self.service.stats.decode_error(fatal.code, self.protocol)
        log.warning(
            "ingest_connection_protocol_error",
            peer=self.peer,
            imei=self.imei,
            protocol=self.protocol,
            code=str(fatal.code),
            reason=fatal.reason,
            excerpt=fatal.excerpt.hex(),
        )
        self._store_raw(fatal.excerpt, "error", f"{fatal.code}: {fatal.reason}", "unframable")
        if fatal.farewell and self.transport is not None and not self.closing:
            self.transport.write(fatal.farewell)
        self.close(f"protocol_{fatal.code}")

    def _store_raw(
        self,
        data: bytes,
        outcome: str,
        error: str | None,
        frame_type: str | None,
        update: DeviceStateUpdate | None = None,
    ) -> None:
        """Queue a frame for `raw_frames` (no ACK waits for it).

        Frames of identified devices are kept whole. Frames of unidentified peers, and rejected frames of
        devices that keep failing, are kept as excerpts (the first INGEST_RAW_EXCERPT_BYTES, with the whole
        frame's length and SHA-256); everything not from an identified device's good stream spends the
        address's hourly budget, and what does not fit is only counted.
        """
        service = self.service
        kept = data
        frame_length = frame_sha256 = None
        if self.device is None or outcome in UNTRUSTED_OUTCOMES:
            admission = service.admission
            limit = service.settings.ingest_raw_excerpt_bytes
            whole = admission.trusted_raw(self) or len(data) <= limit
            if not (whole and admission.raw_allowance(self, len(data))):
                kept = data[:limit]
                if len(kept) == len(data):  # short enough to be whole, but over the budget
                    admission.raw_dropped(self, len(data))
                    kept = b""
                elif admission.raw_allowance(self, len(kept)):
                    frame_length = len(data)
                    frame_sha256 = hashlib.sha256(data).digest()
                    admission.raw_excerpted(self)
                else:
                    admission.raw_dropped(self, len(data))
                    kept = b""
            if not kept:
                if update is not None:
                    service.writer.submit(Pending(None, None, service.loop.time(), device_update=update))
                return
        row = RawFrameRow(
            self.device.id if self.device else None,
            datetime.now(UTC),
            self.session.archive_protocol,
            frame_type or self.session.frame_type(data),
            self.peer,
            bytes(kept),
            outcome,
            error.replace("\x00", "") if error else None,
            frame_length,
            frame_sha256,
        )
        service.writer.submit(
            Pending(None, None, service.loop.time(), raw=row, device_update=update, nbytes=len(kept))
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

    def send_command(self, command_id: int, data: bytes, *, hold_acks: bool) -> bool:
        """Write a command under its protocol's rules; False when the connection cannot take it."""
        if self.closing or self.transport is None or self.transport.is_closing():
            return False
        self.command_id = command_id
        if hold_acks:
            # Instead of the ACK owed (if any): the ACKs follow once the answer arrived.
            self.ack_gate = True
            self.transport.write(data)
        else:
            self.send(data)  # between frames: after the ACKs queued before it
        return True

    def command_settled(self) -> None:
        """The command on this connection was answered or gave up waiting: release held ACKs."""
        self.command_id = None
        if self.ack_gate:
            self.ack_gate = False
            self.flush_outbox()

    def flush_outbox(self) -> None:
        """Send what became sendable at the head of the outbox (called by the writer after a commit)."""
        outbox = self.outbox
        if self.closing or self.transport is None:
            outbox.clear()
            return
        transport = self.transport
        stats = self.service.stats
        now = self.service.loop.time()
        gate = self.ack_gate
        while outbox:
            head = outbox[0]
            if type(head) is bytes:
                transport.write(head)
            else:
                assert isinstance(head, Pending)
                if head.state == WAITING or gate:
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
