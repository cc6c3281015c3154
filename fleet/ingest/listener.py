"""One TCP listener per device protocol, each on its own port, all feeding the same ingest service.

A listener knows its :class:`fleet.protocol.base.ProtocolSpec` and the protocol's row source (one per
process; it holds caches such as a CAN decoder). Everything else - writer, registry, admission, metrics,
raw-frame archive, commands, backpressure - is the service's and shared.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from fleet.errors import ConfigError
from fleet.ingest.connection import DeviceConnection
from fleet.protocol.base import ProtocolSpec, RowSource

if TYPE_CHECKING:
    from fleet.ingest.service import IngestService

LISTEN_BACKLOG = 4096


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
