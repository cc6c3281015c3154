"""Who may connect and who a connection is: the two decisions every protocol's connections go through.

* :meth:`Admission.admit` - a socket was accepted: the connection limit and shutdown apply. This is the
  place for address-based rules (allowed networks, per-address caps, a file-descriptor budget, a PROXY
  protocol header that changes the peer) - one decision, for every protocol.
* :meth:`Admission.identified` - the device claimed an identity (a protocol's :class:`Identify`) and the
  registry resolved it: the unknown-device policy and the one-connection-per-device rule apply. This is
  the place for a takeover guard (a second connection claiming an online device from another address).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from fleet.ingest.stats import CONNECTIONS_ACTIVE, CONNECTIONS_OPENED
from fleet.protocol.base import Identify

if TYPE_CHECKING:
    from fleet.ingest.connection import DeviceConnection
    from fleet.ingest.registry import DeviceInfo
    from fleet.ingest.service import IngestService

log = structlog.get_logger(__name__)

REFUSED_LOG_INTERVAL_SEC = 10.0


class Admission:
    """Admits connections and accepts identities for one ingest service."""

    def __init__(self, service: IngestService) -> None:
        self.service = service
        self._refused_unlogged = 0
        self._refused_logged_at = float("-inf")

    def admit(self, conn: DeviceConnection) -> None:
        """Register a new connection, or refuse it when over the limit or stopping."""
        service = self.service
        if service.stopping or len(service.connections) >= service.settings.ingest_max_connections:
            service.stats.refused("limit" if not service.stopping else "stopping", conn.protocol)
            self._log_refusal(conn)
            conn.close("refused", abort=True)
            return
        service.connections.add(conn)
        service.stats.connections_opened += 1
        CONNECTIONS_OPENED.labels(conn.protocol).inc()
        CONNECTIONS_ACTIVE.labels(conn.protocol).inc()
        # Backpressure holds telemetry back, not logins: a new connection is read until it may send data.

    def identified(self, conn: DeviceConnection, identify: Identify, info: DeviceInfo | None) -> bool:
        """Decide on a resolved identity (None: refused by policy); True when the connection goes on."""
        service = self.service
        if info is None:
            service.stats.refused("unknown_device", conn.protocol)
            log.warning(
                "ingest_device_refused",
                peer=conn.peer,
                imei=identify.identity,
                protocol=conn.protocol,
                policy=service.registry.policy,
            )
            return False
        registry = service.registry
        if conn.device is not None and conn.device.id != info.id:
            registry.release(conn.device.id, conn)  # the same connection now speaks for another device
        conn.device = info
        previous = registry.claim(info.id, conn)
        if previous is not None:
            log.info("ingest_device_reconnected", imei=info.imei, peer=conn.peer, closing_previous=True)
            previous.close("replaced")
        return True

    def _log_refusal(self, conn: DeviceConnection) -> None:
        service = self.service
        now = service.loop.time()
        self._refused_unlogged += 1
        if now - self._refused_logged_at >= REFUSED_LOG_INTERVAL_SEC:
            log.warning(
                "ingest_connection_refused",
                peer=conn.peer,
                protocol=conn.protocol,
                reason="stopping" if service.stopping else "connection limit reached",
                limit=service.settings.ingest_max_connections,
                refused_since_last_log=self._refused_unlogged,
            )
            self._refused_logged_at = now
            self._refused_unlogged = 0
