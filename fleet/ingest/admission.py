"""Who may connect and who a connection is: the decisions every protocol's connections go through.

* :meth:`Admission.admit` - a socket was accepted: shutdown and the device-connection cap (the descriptor
  budget, :mod:`fleet.ingest.descriptors`) apply. Without the PROXY protocol the peer is known at once and
  :meth:`Admission.peer_known` follows immediately; behind a PROXY-protocol balancer
  (``INGEST_PROXY_PROTOCOL=1``) only the balancer's address is checked here (``INGEST_PROXY_TRUSTED_CIDRS``)
  and the connection calls it once the header named the real peer (``conn.peer``).
* :meth:`Admission.peer_known` - every rule that depends on the peer's address: the device-port allow-list
  (``INGEST_ALLOWED_CIDRS``), the per-address caps on connections in total and on unidentified ones, and
  the per-address raw-frame budget and failure marks (:meth:`raw_allowance`, :meth:`connection_failed`).
* :meth:`Admission.identified` - the device claimed an identity (a protocol's :class:`Identify`) and the
  registry resolved it: the unknown-device policy, the device's own address allow-list, and the takeover
  guard (a second connection claiming an online device from another address is refused unless the first
  has been silent for ``INGEST_TAKEOVER_SILENCE_SEC``) apply.

Refusals of connections are counted per reason and logged once per interval with the counts since the
last line, so a flood costs a log line every few seconds, not one per connection. All of it runs once per
connection; nothing here is on the per-record path.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import TYPE_CHECKING

import structlog

from fleet.ingest.addresses import (
    AddressCounts,
    HourlyBudget,
    IPNetwork,
    Marks,
    address_key,
    allowed,
    parse_ip,
    parse_networks,
    peer_host,
)
from fleet.ingest.stats import CONNECTIONS_ACTIVE, CONNECTIONS_OPENED
from fleet.protocol.base import Identify

if TYPE_CHECKING:
    from fleet.config import Settings
    from fleet.ingest.connection import DeviceConnection
    from fleet.ingest.registry import DeviceInfo
    from fleet.ingest.service import IngestService

log = structlog.get_logger(__name__)

REFUSED_LOG_INTERVAL_SEC = 10.0
# An address whose connection was closed as hostile (too many invalid frames, an unframable stream) is
# "failing" this long: its frames are kept as excerpts only, and its next connections start close to the
# reject limit - reconnecting does not buy a fresh allowance.
FAILING_MARK_SEC = 3600.0
HOSTILE_CLOSE_REASONS = frozenset({"too_many_invalid_frames"})
HOSTILE_CLOSE_PREFIX = "protocol_"
# Rejects a connection from a failing address starts with (MAX_CONSECUTIVE_REJECTS closes it).
FAILING_START_REJECTS = 56
MAINTENANCE_INTERVAL_SEC = 60.0

# Why a connection or an identity was refused (labels of fleet_ingest_connections_refused_total).
LIMIT = "limit"
STOPPING = "stopping"
NOT_ALLOWED = "address_not_allowed"
ADDRESS_LIMIT = "address_limit"
UNIDENTIFIED_LIMIT = "address_unidentified_limit"
UNKNOWN_DEVICE = "unknown_device"
TAKEOVER = "takeover_refused"
DEVICE_ADDRESS = "device_address_refused"
PROXY_INVALID = "proxy_header_invalid"  # INGEST_PROXY_PROTOCOL=1 and no valid header came first
PROXY_UNEXPECTED = "proxy_header_unexpected"  # a PROXY header while INGEST_PROXY_PROTOCOL=0
PROXY_UNTRUSTED = "proxy_source_untrusted"  # a balancer outside INGEST_PROXY_TRUSTED_CIDRS
REFUSAL_TEXT = {
    LIMIT: "device connection cap reached",
    STOPPING: "stopping",
    NOT_ALLOWED: "address outside INGEST_ALLOWED_CIDRS",
    ADDRESS_LIMIT: "INGEST_MAX_CONNECTIONS_PER_ADDRESS reached",
    UNIDENTIFIED_LIMIT: "INGEST_MAX_UNIDENTIFIED_PER_ADDRESS reached",
    PROXY_INVALID: "no valid PROXY protocol header (INGEST_PROXY_PROTOCOL=1)",
    PROXY_UNEXPECTED: "a PROXY protocol header, but INGEST_PROXY_PROTOCOL=0",
    PROXY_UNTRUSTED: "PROXY protocol sender outside INGEST_PROXY_TRUSTED_CIDRS",
}


class Admission:
    """Admits connections and accepts identities for one ingest service."""

    def __init__(self, service: IngestService) -> None:
        self.service = service
        self.cap = service.settings.ingest_max_connections  # lowered by the descriptor budget at start
        self.counts = AddressCounts()
        self.raw_budget = HourlyBudget()
        self.failing = Marks()
        self._networks_source: list[str] | None = None
        self._networks: tuple[IPNetwork, ...] = ()
        self._trusted_source: list[str] | None = None
        self._trusted: tuple[IPNetwork, ...] = ()
        self._refused_unlogged: Tally[str] = Tally()
        self._refused_last_peer = ""
        self._refused_logged_at = float("-inf")
        self._maintained_at = float("-inf")
        self._raw_dropped = self._raw_dropped_bytes = 0
        self._raw_logged_at = float("-inf")
        self._proxy_logged_at = float("-inf")

    # --- sockets -----------------------------------------------------------------------------------------
    def admit(self, conn: DeviceConnection) -> None:
        """Register a new connection, or refuse it when stopping, over the cap, or by its address."""
        service = self.service
        if service.stopping or len(service.connections) >= self.cap:
            self._refuse(conn, STOPPING if service.stopping else LIMIT)
            return
        settings = service.settings
        if settings.ingest_proxy_protocol:
            # The peer is the balancer until the header names the device (DeviceConnection reads it).
            if settings.ingest_proxy_trusted_cidrs and not self._trusted_balancer(conn, settings):
                self._refuse(conn, PROXY_UNTRUSTED)
                return
        elif not self.peer_known(conn):
            return
        service.connections.add(conn)
        service.stats.connections_opened += 1
        CONNECTIONS_OPENED.labels(conn.protocol).inc()
        CONNECTIONS_ACTIVE.labels(conn.protocol).inc()
        # Backpressure holds telemetry back, not logins: a new connection is read until it may send data.

    def peer_known(self, conn: DeviceConnection) -> bool:
        """Apply the address rules to ``conn.peer``; False when the connection was refused (and closed).

        Called by :meth:`admit` without the PROXY protocol, or by the listener once a PROXY header set
        ``conn.peer``. Calling it again for the same connection (a changed peer) re-counts it.
        """
        settings = self.service.settings
        if conn.address is not None:
            self.release(conn)  # counted under an earlier peer (the balancer's address)
        ip = parse_ip(peer_host(conn.peer))
        key = address_key(ip)
        if not allowed(ip, self._allowed_networks(settings.ingest_allowed_cidrs)):
            self._refuse(conn, NOT_ALLOWED)
            return False
        if self.counts.total.get(key, 0) >= settings.ingest_max_connections_per_address:
            self._refuse(conn, ADDRESS_LIMIT)
            return False
        if self.counts.unidentified.get(key, 0) >= settings.ingest_max_unidentified_per_address:
            self._refuse(conn, UNIDENTIFIED_LIMIT)
            return False
        self.counts.add(key)
        conn.address = key
        conn.ip = ip
        if self.failing.marked(key, self.service.loop.time()):
            conn.rejects = max(conn.rejects, FAILING_START_REJECTS)
        return True

    def _trusted_balancer(self, conn: DeviceConnection, settings: Settings) -> bool:
        cidrs = settings.ingest_proxy_trusted_cidrs
        if cidrs is not self._trusted_source:
            self._trusted = parse_networks(cidrs)
            self._trusted_source = cidrs
        return allowed(parse_ip(peer_host(conn.peer)), self._trusted)

    def proxy_refused(self, conn: DeviceConnection, reason: str, detail: str, excerpt: bytes) -> None:
        """Refuse a connection whose first bytes broke the PROXY protocol rule (counted, logged)."""
        if self._proxy_log_due():
            log.warning(
                "ingest_proxy_header_refused",
                peer=conn.peer,
                protocol=conn.protocol,
                reason=REFUSAL_TEXT[reason],
                detail=detail,
                excerpt=excerpt.hex(),
            )
        self._refuse(conn, reason)

    def _proxy_log_due(self) -> bool:
        # One line per interval: a scanner (or a misconfigured balancer) must not flood the log.
        now = self.service.loop.time()
        if now - self._proxy_logged_at < REFUSED_LOG_INTERVAL_SEC:
            return False
        self._proxy_logged_at = now
        return True

    def release(self, conn: DeviceConnection) -> None:
        """Uncount a connection (it closed, or its peer changed)."""
        key = conn.address
        if key is None:
            return
        conn.address = None
        self.counts.remove(key, unidentified=conn.device is None)

    def connection_failed(self, conn: DeviceConnection, reason: str) -> None:
        """Mark the address of a connection closed as hostile as failing (see FAILING_MARK_SEC)."""
        if conn.address is not None and (
            reason in HOSTILE_CLOSE_REASONS or reason.startswith(HOSTILE_CLOSE_PREFIX)
        ):
            self.failing.mark(conn.address, self.service.loop.time() + FAILING_MARK_SEC)

    def raw_allowance(self, conn: DeviceConnection, nbytes: int) -> bool:
        """Spend ``nbytes`` of the address's hourly raw-frame budget; False when it is used up."""
        service = self.service
        limit = service.settings.ingest_stranger_raw_bytes_per_hour
        return self.raw_budget.spend(conn.address or "?", nbytes, limit, service.loop.time())

    def raw_excerpted(self, conn: DeviceConnection) -> None:
        self.service.stats.raw_limit("excerpt", conn.protocol)

    def raw_dropped(self, conn: DeviceConnection, nbytes: int) -> None:
        """Count a frame the budget had no room for; log once per interval with the counts."""
        self.service.stats.raw_limit("dropped", conn.protocol)
        self._raw_dropped += 1
        self._raw_dropped_bytes += nbytes
        now = self.service.loop.time()
        if now - self._raw_logged_at >= REFUSED_LOG_INTERVAL_SEC:
            log.warning(
                "ingest_raw_frame_budget_exhausted",
                peer=conn.peer,
                imei=conn.imei,
                budget_bytes_per_hour=self.service.settings.ingest_stranger_raw_bytes_per_hour,
                frames_not_kept=self._raw_dropped,
                bytes_not_kept=self._raw_dropped_bytes,
            )
            self._raw_logged_at = now
            self._raw_dropped = self._raw_dropped_bytes = 0

    def trusted_raw(self, conn: DeviceConnection) -> bool:
        """True when a rejected frame of this (identified) connection may be kept whole."""
        from fleet.ingest.connection import TRUSTED_REJECTS

        return (
            conn.device is not None
            and conn.rejects <= TRUSTED_REJECTS
            and not self.failing.marked(conn.address or "?", self.service.loop.time())
        )

    def _allowed_networks(self, cidrs: list[str]) -> tuple[IPNetwork, ...]:
        if cidrs is not self._networks_source:  # settings can be reloaded: parse each list once
            self._networks = parse_networks(cidrs)
            self._networks_source = cidrs
        return self._networks

    # --- identities --------------------------------------------------------------------------------------
    def identified(self, conn: DeviceConnection, identify: Identify, info: DeviceInfo | None) -> str | None:
        """Decide on a resolved identity (None: refused by policy); return why it was refused, or None."""
        service = self.service
        if info is None:
            service.stats.refused(UNKNOWN_DEVICE, conn.protocol)
            log.warning(
                "ingest_device_refused",
                peer=conn.peer,
                imei=identify.identity,
                protocol=conn.protocol,
                policy=service.registry.policy_for(conn.protocol),
            )
            return UNKNOWN_DEVICE
        if info.allowed_networks is not None and not allowed(conn.ip, info.allowed_networks):
            self._security_refusal(
                conn, DEVICE_ADDRESS, info, allowed=[str(n) for n in info.allowed_networks]
            )
            return DEVICE_ADDRESS
        registry = service.registry
        current = registry.connection_of(info.id)
        if current is not None and current is not conn:
            refusal = self._takeover_refusal(current, conn)
            if refusal is not None:
                self._security_refusal(conn, TAKEOVER, info, **refusal)
                return TAKEOVER
        if conn.device is not None and conn.device.id != info.id:
            registry.release(conn.device.id, conn)  # the same connection now speaks for another device
        if conn.device is None and conn.address is not None:
            self.counts.identified(conn.address)
        conn.device = info
        previous = registry.claim(info.id, conn)
        if previous is not None:
            log.info("ingest_device_reconnected", imei=info.imei, peer=conn.peer, closing_previous=True)
            previous.close("replaced")
        return None

    def _takeover_refusal(self, current: object, conn: DeviceConnection) -> dict[str, object] | None:
        """Why ``conn`` may not replace the device's ``current`` connection (None: it may)."""
        from fleet.ingest.connection import DeviceConnection

        if not isinstance(current, DeviceConnection) or current.closing:
            return None
        if current.address is not None and current.address == conn.address:
            return None  # the address the device was last seen at: a tracker redialling through its NAT
        silent = self.service.loop.time() - current.last_rx
        if silent > self.service.settings.ingest_takeover_silence_sec and not current.pause_flags:
            return None  # the old link is dead (a tracker that changed networks without closing it)
        return {"online_peer": current.peer, "online_silent_sec": round(max(silent, 0.0), 1)}

    def _security_refusal(
        self, conn: DeviceConnection, kind: str, info: DeviceInfo, **details: object
    ) -> None:
        self.service.stats.refused(kind, conn.protocol)
        self.service.security.record(
            kind,
            address=conn.address or "?",
            peer=conn.peer,
            protocol=conn.protocol,
            imei=info.imei,
            device_id=info.id,
            **details,
        )

    # --- refusals and housekeeping -----------------------------------------------------------------------
    def _refuse(self, conn: DeviceConnection, reason: str) -> None:
        service = self.service
        service.stats.refused(reason, conn.protocol)
        self._refused_unlogged[reason] += 1
        self._refused_last_peer = conn.peer
        self._log_refusals(service.loop.time())
        conn.close("refused", abort=True)

    def _log_refusals(self, now: float) -> None:
        if not self._refused_unlogged or now - self._refused_logged_at < REFUSED_LOG_INTERVAL_SEC:
            return
        counts = dict(self._refused_unlogged)
        log.warning(
            "ingest_connection_refused",
            reasons={reason: REFUSAL_TEXT.get(reason, reason) for reason in counts},
            refused_since_last_log=sum(counts.values()),
            counts=counts,
            last_peer=self._refused_last_peer,
            cap=self.cap,
            connections=len(self.service.connections),
        )
        self._refused_logged_at = now
        self._refused_unlogged.clear()

    def tick(self, now: float) -> None:
        """Periodic work (the service's sweep): log refusals still unlogged, forget expired windows."""
        self._log_refusals(now)
        if now - self._maintained_at >= MAINTENANCE_INTERVAL_SEC:
            self._maintained_at = now
            self.raw_budget.expire(now)
            self.failing.expire(now)
