"""Time values of the Outbound API: epoch milliseconds inside, ISO-8601 UTC on the wire.

The agent stores every time as an integer count of milliseconds since the Unix epoch. On the wire a time is
``YYYY-MM-DDTHH:MM:SS.mmmZ``; requests may also give a time with another UTC offset, without an offset (read
as UTC) or as epoch seconds (``1732550400`` or ``1732550400.25``).
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

# Epoch seconds: an optional sign, digits, an optional fraction. Anything else is read as ISO-8601.
_EPOCH_SECONDS = re.compile(r"[+-]?\d+(\.\d+)?")

# The wire format has four-digit years, so the representable range is 1970-01-01 up to the end of 9999.
MIN_TIME_MS = 0
MAX_TIME_MS = 253_402_300_800_000 - 1


class TimeFormatError(ValueError):
    """A text is not a time the contract accepts."""


def now_ms() -> int:
    """Return the current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def format_time(ms: int) -> str:
    """Format epoch milliseconds as ISO-8601 UTC with millisecond precision and a ``Z`` suffix."""
    seconds, millis = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


def parse_time(text: str) -> int:
    """Parse an ISO-8601 time or epoch seconds into epoch milliseconds (sub-millisecond digits dropped)."""
    text = text.strip()
    if not text:
        raise TimeFormatError("empty time")
    if _EPOCH_SECONDS.fullmatch(text):
        whole, _, fraction = text.partition(".")
        # Integer arithmetic keeps 1732550400.001 exact, which a float would not.
        ms = int(whole) * 1000 + (-1 if whole.startswith("-") else 1) * int((fraction + "000")[:3])
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as err:
            raise TimeFormatError(f"not an ISO-8601 time or epoch seconds: {text!r}") from err
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
        ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return check_time_range(ms)


def seconds_to_ms(seconds: float) -> int:
    """Convert epoch seconds given as a JSON number into epoch milliseconds, rounded to the nearest one."""
    if not math.isfinite(seconds):
        raise TimeFormatError("time is not a finite number")
    # Rounding, not truncation: the binary float for 1732550400.001 is a hair below the decimal it spells.
    return check_time_range(round(seconds * 1000))


def check_time_range(ms: int) -> int:
    """Return ``ms`` when it lies between 1970 and the end of 9999, else raise TimeFormatError."""
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise TimeFormatError("time outside 1970-01-01 .. 9999-12-31")
    return ms
