"""systemd's notify protocol (`Type=notify`, `WatchdogSec=`): READY, STOPPING and the watchdog ping.

The protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET` (an abstract
socket when it starts with `@`); without that variable (not under systemd) every call does nothing. The
watchdog ping is sent only after the same check `fleet check` makes succeeds, so a server whose event loop
hangs or whose API stops answering is restarted by systemd (`Restart=always`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable

import structlog

from fleet.ops.jobs import PeriodicJob

log = structlog.get_logger(__name__)


def notify(message: str) -> bool:
    """Send `message` to systemd; False when not running under a notify-type unit."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as err:
        log.warning("systemd_notify_failed", error=str(err))
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WatchdogSec), or None when systemd set no watchdog for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(1.0, int(usec) / 1_000_000 / 2)
    except ValueError:
        return None


class WatchdogCheckFailed(RuntimeError):
    """The health check behind the watchdog ping failed (systemd restarts us if it goes on)."""


def watchdog_job(check: Callable[[], Awaitable[bool]], interval: float) -> PeriodicJob:
    """A job that pings systemd's watchdog after each successful health check."""

    async def ping() -> None:
        if not await check():
            raise WatchdogCheckFailed("health check failed; watchdog not fed")
        notify("WATCHDOG=1")

    return PeriodicJob("watchdog", ping, interval=interval, tolerance=interval * 2, timeout=interval)
