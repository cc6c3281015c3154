"""Which process holds which TCP connections, read from /proc (Linux): for tests of shared ports."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ESTABLISHED = "01"
LISTEN = "0A"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for name in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = os.readlink(fd_dir / name)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def established(pid: int, local_port: int) -> int:
    """Established TCP connections of process ``pid`` whose local port is ``local_port``."""
    return _count(pid, local_port, ESTABLISHED)


def listening(pid: int, local_port: int) -> bool:
    """True when process ``pid`` has a listening socket on ``local_port``."""
    return _count(pid, local_port, LISTEN) > 0


def _count(pid: int, local_port: int, state: str) -> int:
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port == local_port and fields[3] == state and fields[9] in inodes:
                    count += 1
    return count
