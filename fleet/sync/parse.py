"""Validate Outbound API answers: pure functions from decoded JSON to the models the service stores.

A vehicle is not trusted. Two kinds of problems are told apart:

* the answer as a whole breaks the contract (not JSON, not an object, `rows` not a list, a window end outside
  the window asked for, more rows than the cap) → `PullProtocolError`, and nothing of it is stored;
* single entries are bad (wrong types, NaN or infinite values, times before 2000 or in the future, times
  outside the window, channels the vehicle did not declare) → the entry is dropped and counted by reason
  in `rejected`, and the rest is kept. The service writes the counts into the journal.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet.sync.errors import PullProtocolError
from fleet.sync.models import AlarmInfo, AlarmPage, ChannelInfo, DataPage, Row, StatusReply

# Nothing this system stores predates 2000; older times are a vehicle clock that was never set.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
# A vehicle clock may run a little ahead of the server's; beyond this a time is "in the future".
MAX_CLOCK_SKEW = timedelta(seconds=60)

# Id ranges of the contract (§4), which also fit the schema's `integer` and `bigint` columns.
CHANNEL_ID_MAX = 2**31 - 1
ALARM_ID_MAX = 2**63 - 1
# Text limits: generous for real names, small enough that a hostile agent cannot bloat the tables.
MAX_NAME_CHARS = 200
MAX_UNIT_CHARS = 50
MAX_LEVEL_CHARS = 32
MAX_MESSAGE_CHARS = 2000
MAX_VERSION_CHARS = 100
MAX_CHANNELS = 10_000

# Reasons for dropping an entry (journal text and the `reason` label of the rejection metric).
WRONG_TYPE = "wrong_type"
NOT_FINITE = "not_finite"
BAD_TIME = "bad_time"
TOO_OLD = "before_2000"
FUTURE = "future_time"
OUTSIDE_WINDOW = "outside_window"
UNKNOWN_CHANNEL = "unknown_channel"
TOO_LONG = "too_long"
BAD_RANGE = "bad_range"
DUPLICATE = "duplicate"
REJECT_REASONS = (
    WRONG_TYPE,
    NOT_FINITE,
    BAD_TIME,
    TOO_OLD,
    FUTURE,
    OUTSIDE_WINDOW,
    UNKNOWN_CHANNEL,
    TOO_LONG,
    BAD_RANGE,
    DUPLICATE,
)


def decode_json(endpoint: str, body: bytes) -> Any:
    """Decode a JSON body; anything undecodable is a protocol error."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PullProtocolError(endpoint, f"the body is not valid JSON ({type(err).__name__})") from None


def format_time(value: datetime) -> str:
    """Format a time as the contract's ISO-8601 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`."""
    utc = value.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def to_millis(value: datetime) -> datetime:
    """Drop digits below a millisecond: the contract's resolution, so windows meet exactly."""
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def parse_time(value: Any) -> datetime | None:
    """Parse a contract time (ISO-8601 text; no offset means UTC) into an aware UTC datetime, else None."""
    if type(value) is not str or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def _object(endpoint: str, doc: Any) -> dict[str, Any]:
    if type(doc) is not dict:
        raise PullProtocolError(endpoint, f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _text(value: Any, limit: int) -> str | None:
    return value if type(value) is str and len(value) <= limit else None


def _number(value: Any) -> float | None:
    """A finite JSON number as float; None for anything else (bool, text, NaN, inf, too large)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def parse_status(doc: Any) -> StatusReply:
    """Read `/status`; only an answer that is not an object is refused (the fields are informational)."""
    body = _object("status", doc)
    version = body.get("software_version")
    contract = body.get("contract_version")
    db_ok = body.get("db_ok")
    limits = body.get("limits")
    if type(limits) is not dict:
        limits = {}
    return StatusReply(
        online=body.get("online") is True,
        software_version=_text(version, MAX_VERSION_CHARS),
        contract_version=_text(contract, MAX_VERSION_CHARS),
        db_ok=db_ok if type(db_ok) is bool else None,
        oldest_data=parse_time(body.get("oldest_data")),
        row_limit=_positive(limits.get("row_limit")),
        max_window_seconds=_positive(limits.get("max_window_seconds")),
    )


def _positive(value: Any) -> int | None:
    return value if type(value) is int and value >= 1 else None


def contract_major(version: str | None) -> int | None:
    """The MAJOR of a `MAJOR.MINOR` contract version; None when it is missing or malformed."""
    if version is None:
        return None
    major, dot, minor = version.partition(".")
    if not (dot and major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit()):
        return None
    return int(major)


def parse_channels(doc: Any) -> tuple[list[ChannelInfo], Counter[str]]:
    """Read `/channels`: valid entries by channel id (a repeated id keeps its last entry), rejections."""
    channels = _object("channels", doc).get("channels")
    if type(channels) is not list:
        raise PullProtocolError("channels", "'channels' is not a list")
    if len(channels) > MAX_CHANNELS:
        raise PullProtocolError("channels", f"{len(channels)} channels is more than {MAX_CHANNELS}")
    rejected: Counter[str] = Counter()
    found: dict[int, ChannelInfo] = {}
    for entry in channels:
        if type(entry) is not dict:
            rejected[WRONG_TYPE] += 1
            continue
        channel_id = entry.get("channel_id")
        name = entry.get("name")
        unit = entry.get("unit")
        if type(channel_id) is not int or type(name) is not str or not (unit is None or type(unit) is str):
            rejected[WRONG_TYPE] += 1
            continue
        if not 0 <= channel_id <= CHANNEL_ID_MAX:
            rejected[WRONG_TYPE] += 1
            continue
        if not 1 <= len(name) <= MAX_NAME_CHARS or (unit is not None and len(unit) > MAX_UNIT_CHARS):
            rejected[TOO_LONG] += 1
            continue
        low_raw, high_raw = entry.get("phys_min"), entry.get("phys_max")
        low, high = _number(low_raw), _number(high_raw)
        bad = [
            raw for raw, number in ((low_raw, low), (high_raw, high)) if number is None and raw is not None
        ]
        if bad:
            rejected[NOT_FINITE if any(type(raw) is float for raw in bad) else WRONG_TYPE] += 1
            continue
        if low is not None and high is not None and low > high:
            rejected[BAD_RANGE] += 1
            continue
        if channel_id in found:
            rejected[DUPLICATE] += 1
        found[channel_id] = ChannelInfo(channel_id, name, unit, low, high)
    return list(found.values()), rejected


def _window_end(endpoint: str, body: dict[str, Any], start: datetime, end: datetime) -> datetime:
    """The `to` the agent answered for: within [start, end]; the requested end when it is missing."""
    raw = body.get("to")
    if raw is None:
        return end
    answered = parse_time(raw)
    if answered is None:
        raise PullProtocolError(endpoint, "'to' is not a time")
    if not start <= answered <= end:
        raise PullProtocolError(endpoint, f"'to' {format_time(answered)} is outside the window asked for")
    return answered


def parse_data(
    doc: Any,
    *,
    vehicle_id: int,
    start: datetime,
    end: datetime,
    channels: Collection[int] | None,
    now: datetime,
    max_rows: int,
) -> DataPage:
    """Read a `/data` answer for the window [start, end): rows to store, the answered end, paging.

    `channels` are the ids rows are checked against; None when no channel list is known yet (a new vehicle
    whose `/channels` failed): then any id of the contract's range is taken, so the rows are not lost.
    """
    body = _object("data", doc)
    rows = body.get("rows")
    if type(rows) is not list:
        raise PullProtocolError("data", "'rows' is not a list")
    if len(rows) > max_rows and not _one_timestamp(rows):
        # The contract allows more only for a single timestamp with more channels than the limit.
        raise PullProtocolError("data", f"{len(rows)} rows is more than the {max_rows} asked for")
    truncated = body.get("truncated", False)
    if type(truncated) is not bool:
        raise PullProtocolError("data", "'truncated' is not a boolean")
    answered_end = _window_end("data", body, start, end)
    next_from: datetime | None = None
    if truncated:
        if not rows:  # a page that holds nothing cannot be cut short; following it could loop forever
            raise PullProtocolError("data", "a truncated answer without rows")
        next_from = parse_time(body.get("next_from")) if body.get("next_from") is not None else None
        if next_from is not None and not start < next_from <= answered_end:
            raise PullProtocolError("data", "'next_from' is outside the window")

    latest = now + MAX_CLOCK_SKEW
    accepted: list[Row] = []
    append = accepted.append
    rejected: Counter[str] = Counter()
    # One time string is shared by every channel of a tick: parse each once. The cache maps a string to its
    # datetime, or to a rejection reason (a str) when the time itself is unacceptable.
    times: dict[Any, datetime | str] = {}
    for row in rows:
        if type(row) is not dict:
            rejected[WRONG_TYPE] += 1
            continue
        channel_id = row.get("channel_id")
        raw_time = row.get("time")
        value = row.get("value")
        if type(channel_id) is not int:
            rejected[WRONG_TYPE] += 1
            continue
        if type(value) is not float:
            number = _number(value)
            if number is None:
                rejected[NOT_FINITE if type(value) is int else WRONG_TYPE] += 1
                continue
            value = number
        elif value != value or value in (math.inf, -math.inf):
            rejected[NOT_FINITE] += 1
            continue
        try:
            when = times[raw_time]
        except KeyError:
            when = _classify_time(raw_time, start, answered_end, latest)
            times[raw_time] = when
        except TypeError:  # unhashable: a list or an object where a time belongs
            rejected[BAD_TIME] += 1
            continue
        if type(when) is str:
            rejected[when] += 1
            continue
        if channels is None:
            if not 0 <= channel_id <= CHANNEL_ID_MAX:
                rejected[WRONG_TYPE] += 1
                continue
        elif channel_id not in channels:
            rejected[UNKNOWN_CHANNEL] += 1
            continue
        append((vehicle_id, channel_id, when, value))  # type: ignore[arg-type]
    return DataPage(start, answered_end, accepted, truncated, next_from, rejected)


def _one_timestamp(rows: list[Any]) -> bool:
    first, last = rows[0], rows[-1]
    return type(first) is dict and type(last) is dict and first.get("time") == last.get("time")


def _classify_time(raw: Any, start: datetime, end: datetime, latest: datetime) -> datetime | str:
    when = parse_time(raw)
    if when is None:
        return BAD_TIME
    if when < EARLIEST_TIME:
        return TOO_OLD
    if when > latest:
        return FUTURE
    if not start <= when < end:
        return OUTSIDE_WINDOW
    return when


def parse_alarms(doc: Any, *, start: datetime, end: datetime, now: datetime) -> AlarmPage:
    """Read an `/alarms` answer: alarms to upsert (a repeated id keeps its last entry) and rejections."""
    body = _object("alarms", doc)
    alarms = body.get("alarms")
    if type(alarms) is not list:
        raise PullProtocolError("alarms", "'alarms' is not a list")
    truncated = body.get("truncated", False)
    if type(truncated) is not bool:
        raise PullProtocolError("alarms", "'truncated' is not a boolean")
    answered_end = _window_end("alarms", body, start, end)
    latest = now + MAX_CLOCK_SKEW
    rejected: Counter[str] = Counter()
    found: dict[int, AlarmInfo] = {}
    for entry in alarms:
        if type(entry) is not dict:
            rejected[WRONG_TYPE] += 1
            continue
        alarm_id = entry.get("alarm_id")
        channel_id = entry.get("channel_id")
        level = entry.get("level")
        message = entry.get("message")
        if (
            type(alarm_id) is not int
            or not 1 <= alarm_id <= ALARM_ID_MAX
            or not (channel_id is None or (type(channel_id) is int and 0 <= channel_id <= CHANNEL_ID_MAX))
            or not (level is None or type(level) is str)
            or not (message is None or type(message) is str)
        ):
            rejected[WRONG_TYPE] += 1
            continue
        if (level is not None and len(level) > MAX_LEVEL_CHARS) or (
            message is not None and len(message) > MAX_MESSAGE_CHARS
        ):
            rejected[TOO_LONG] += 1
            continue
        raised_at = parse_time(entry.get("raised_at"))
        raw_resolved = entry.get("resolved_at")
        resolved_at = parse_time(raw_resolved) if raw_resolved is not None else None
        if raised_at is None or (raw_resolved is not None and resolved_at is None):
            rejected[BAD_TIME] += 1
            continue
        if raised_at < EARLIEST_TIME:
            rejected[TOO_OLD] += 1
            continue
        if raised_at > latest or (resolved_at is not None and resolved_at > latest):
            rejected[FUTURE] += 1
            continue
        if resolved_at is not None and resolved_at < raised_at:
            rejected[BAD_RANGE] += 1
            continue
        if alarm_id in found:
            rejected[DUPLICATE] += 1
        found[alarm_id] = AlarmInfo(alarm_id, channel_id, level, message, raised_at, resolved_at)
    return AlarmPage(start, answered_end, list(found.values()), truncated, rejected)
