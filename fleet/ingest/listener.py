"""One TCP listener per device protocol, each on its own port, all feeding the same ingest service.

A listener knows its :class:`fleet.protocol.base.ProtocolSpec` and the protocol's row source (one per
process; it holds caches such as a CAN decoder). Everything else - writer, registry, admission, metrics,
raw-frame archive, commands, backpressure - is the service's and shared.

Every listener sets ``SO_REUSEPORT`` (Linux): several ingest processes (``fleet serve --workers N``, or a
new version started next to the old one during an upgrade) bind the same port and the kernel spreads new
connections over them. When one of them closes its socket, the connections the kernel had already queued
for it (handshake done, not yet accepted) are reset - unless ``net.ipv4.tcp_migrate_req=1`` (Linux 5.14+),
which moves them to another socket of the group. A reset costs the tracker a reconnect, never a record
(nothing was acknowledged on it); the listener logs a hint at start when the setting is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.errors import ConfigError
from fleet.ingest.connection import DeviceConnection
from fleet.protocol.base import ProtocolSpec, RowSource

if TYPE_CHECKING:
    from fleet.ingest.service import IngestService

LISTEN_BACKLOG = 4096
REUSE_PORT = hasattr(socket, "SO_REUSEPORT")
MIGRATE_REQ_SYSCTL = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def migrates_queued_connections() -> bool | None:
    """Whether the kernel hands a closing listener's queued connections to another one (None: unknown)."""
    try:
        return MIGRATE_REQ_SYSCTL.read_text().strip() == "1"
    except OSError:
        return None


class Listener:
    """The server socket of one protocol."""

    def __init__(self, service: IngestService, spec: ProtocolSpec, host: str, port: int) -> None:
        self.service = service
        self.spec = spec
        self.host = host
        self.port = port  # the configured port; the bound one after start() (0: an ephemeral port)
        self.rows: RowSource = spec.new_rows()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and listen; ConfigError names the protocol and address when that fails."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: DeviceConnection(self.service, self),
                self.host,
                self.port,
                backlog=LISTEN_BACKLOG,
                reuse_address=True,
                reuse_port=REUSE_PORT,
            )
        except OSError as err:
            raise ConfigError(
                f"the {self.spec.title} listener cannot bind {self.host}:{self.port}: {err}"
            ) from err
        self.port = self._server.sockets[0].getsockname()[1]

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self, within: float = 5.0) -> None:
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), within)
