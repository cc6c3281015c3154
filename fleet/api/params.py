"""Shared query parameters: pagination, time ranges, downsampling buckets, path ids."""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Path, Query
from pydantic import BeforeValidator

from fleet.api.errors import ApiError

MAX_PAGE = 1000  # ordinary lists
MAX_HISTORY_POINTS = 100_000  # history endpoints: a day of 1 Hz data fits in one page
MAX_OFFSET = 100_000_000
DEFAULT_RANGE = timedelta(hours=24)  # vehicle history
DEVICE_DEFAULT_RANGE = timedelta(days=7)  # device API (seed 000) lists, newest first
MAX_BUCKET = timedelta(days=31)
BIGINT_MAX = 2**63 - 1

_BUCKET = re.compile(r"^(\d{1,6})(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    offset: int


# The page parameters as plain query parameters, for the hottest handlers to declare themselves: each
# dependency FastAPI resolves costs 10-30 µs per request (docs/PERFORMANCE.md, API section).
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (max {MAX_PAGE})")]
PageOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]


async def page_params(limit: PageLimit = 100, offset: PageOffset = 0) -> PageParams:
    return PageParams(limit, offset)


async def history_page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_HISTORY_POINTS, description=f"points per page (max {MAX_HISTORY_POINTS})")
    ] = MAX_HISTORY_POINTS,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> PageParams:
    return PageParams(limit, offset)


Pagination = Annotated[PageParams, Depends(page_params)]
HistoryPagination = Annotated[PageParams, Depends(history_page_params)]


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def make_time_range(default: timedelta) -> Callable[..., Awaitable[TimeRange]]:
    """A `from`/`to` dependency whose range defaults to `default` before now."""
    hours = default.total_seconds() / 3600

    async def time_range(
        start: Annotated[
            datetime | None,
            Query(alias="from", description=f"start (inclusive), ISO 8601; default: {hours:g} h before `to`"),
        ] = None,
        end: Annotated[
            datetime | None, Query(alias="to", description="end (exclusive), ISO 8601; default: now")
        ] = None,
    ) -> TimeRange:
        try:
            stop = _utc(end) if end is not None else datetime.now(UTC)
            begin = _utc(start) if start is not None else stop - default
        except (OverflowError, ValueError) as err:
            raise ApiError(400, "invalid_input", "from/to are out of range") from err
        if begin >= stop:
            raise ApiError(400, "invalid_input", "`from` must be earlier than `to`")
        if begin.year < 1971 or stop.year > 9000:
            raise ApiError(400, "invalid_input", "from/to are out of range")
        return TimeRange(begin, stop)

    return time_range


Range = Annotated[TimeRange, Depends(make_time_range(DEFAULT_RANGE))]
DeviceRange = Annotated[TimeRange, Depends(make_time_range(DEVICE_DEFAULT_RANGE))]


def parse_bucket(value: str | None) -> timedelta | None:
    """`30s`, `1m`, `15m`, `1h`, `1d` → timedelta; None for no downsampling."""
    if value is None or value == "":
        return None
    match = _BUCKET.match(value.strip())
    if not match:
        raise ApiError(400, "invalid_input", "bucket must look like 30s, 1m, 15m, 1h or 1d")
    size = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if size <= timedelta(0) or size > MAX_BUCKET:
        raise ApiError(400, "invalid_input", "bucket must be between 1s and 31d")
    return size


async def bucket_param(
    bucket: Annotated[
        str | None,
        Query(
            max_length=10, description="downsample into buckets of this size (avg per bucket): 30s, 1m, 1h"
        ),
    ] = None,
) -> timedelta | None:
    return parse_bucket(bucket)


Bucket = Annotated[timedelta | None, Depends(bucket_param)]


def ascii_digits(value: object) -> object:
    """Ids in paths are ASCII digits only: no sign, spaces, underscores, decimals or other scripts' digits."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a number written with the digits 0-9")
    return value


StrictId = Annotated[int, BeforeValidator(ascii_digits)]
VehicleId = Annotated[StrictId, Path(ge=1, le=BIGINT_MAX, description="vehicle id")]
UserId = Annotated[StrictId, Path(ge=1, le=BIGINT_MAX, description="user id")]
DeviceId = Annotated[StrictId, Path(ge=1, le=BIGINT_MAX, description="device (tracker) id")]
DeviceRefParam = Annotated[
    str, Path(min_length=1, max_length=32, description="numeric device id or the tracker's IMEI")
]
