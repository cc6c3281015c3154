"""`fleet ops logs`: the server's JSON log (DATA_DIR/logs/server.log) as readable lines, optionally followed.

Filters by minimum level and by a substring; follows across rotation (the file is reopened when it shrinks or
is replaced). Lines that are not JSON are shown as they are.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.text import Text

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50, "exception": 40}
_STYLE = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red", "critical": "bold red"}
_SKIP = {"event", "level", "timestamp", "logger"}


def format_line(line: str, min_level: int, needle: str | None) -> Text | None:
    """One log line as styled text, or None when it is filtered out."""
    if needle and needle.lower() not in line.lower():
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return Text(line.rstrip("\n")) if min_level <= LEVELS["info"] else None
    if not isinstance(entry, dict):
        return Text(line.rstrip("\n"))
    level = str(entry.get("level", "info")).lower()
    if LEVELS.get(level, 20) < min_level:
        return None
    text = Text()
    text.append(str(entry.get("timestamp", ""))[:23].replace("T", " ") + " ", style="dim")
    text.append(f"{level.upper():<8}", style=_STYLE.get(level, ""))
    text.append(f"{entry.get('event', '')} ", style="bold")
    rest = " ".join(f"{k}={v}" for k, v in entry.items() if k not in _SKIP)
    text.append(rest)
    if entry.get("logger"):
        text.append(f"  [{entry['logger']}]", style="dim")
    return text


def last_lines(path: Path, count: int) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return list(deque(handle, maxlen=count))


def follow(path: Path, poll: float = 0.5) -> Iterator[str]:
    """Yield lines appended to `path` from now on, surviving rotation."""
    handle = path.open(encoding="utf-8", errors="replace")
    handle.seek(0, 2)
    inode = path.stat().st_ino
    try:
        while True:
            line = handle.readline()
            if line:
                yield line
                continue
            time.sleep(poll)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if stat.st_ino != inode or stat.st_size < handle.tell():
                handle.close()
                handle = path.open(encoding="utf-8", errors="replace")
                inode = stat.st_ino
    finally:
        handle.close()


def show(path: Path, *, lines: int, level: str, needle: str | None, keep_following: bool) -> int:
    """Print the last `lines` matching lines, then follow when asked; returns how many were printed."""
    console = Console(highlight=False, soft_wrap=True)
    min_level = LEVELS.get(level.lower(), 20)
    window = lines * 20 if needle or min_level > LEVELS["info"] else lines  # filtered: look further back
    matches = [text for raw in last_lines(path, window) if (text := format_line(raw, min_level, needle))]
    for text in matches[-lines:]:
        console.print(text)
    shown = len(matches[-lines:])
    if keep_following:
        try:
            for raw in follow(path):
                text = format_line(raw, min_level, needle)
                if text is not None:
                    console.print(text)
                    shown += 1
        except KeyboardInterrupt:
            pass
    return shown
