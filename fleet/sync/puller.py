"""The HTTP client of one vehicle's Outbound API (docs/DATA_CONTRACT.md).

All pullers share one `httpx.AsyncClient` (one connection pool with limits, see `open_client` and
`fleet.sync.transport`). Every request
runs under one total deadline (`PULL_TIMEOUT_SEC`): httpx's own timeouts apply per read, so a vehicle that
dribbles a byte every few seconds would otherwise hold a worker forever. Bodies are streamed and counted, and
a body over its cap is abandoned, whatever `Content-Length` claims (a compressed body is counted after
decompression, so a gzip bomb is capped too). Failures become the `PullError` classes of `fleet.sync.errors`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from datetime import datetime
from typing import Any

import httpx

from fleet.sync import metrics
from fleet.sync.errors import (
    PullAuthError,
    PullError,
    PullHttpError,
    PullProtocolError,
    PullTimeout,
    PullUnreachable,
)
from fleet.sync.models import AlarmPage, ChannelInfo, DataPage, StatusReply, VehicleTarget
from fleet.sync.parse import (
    MAX_CHANNELS,
    decode_json,
    format_time,
    parse_alarms,
    parse_channels,
    parse_data,
    parse_status,
)
from fleet.sync.transport import FleetTransport

API_KEY_HEADER = "X-API-Key"
USER_AGENT = "fleet-sync/1"

# Body caps. /status and /channels are small by nature. A /data row is about 70 bytes on the wire; 256 bytes
# per requested row leaves room for long channel ids and values while keeping a page bounded.
STATUS_MAX_BYTES = 64 * 1024
CHANNELS_MAX_BYTES = 2 * 1024 * 1024
ALARMS_MAX_BYTES = 16 * 1024 * 1024
DATA_BYTES_PER_ROW = 256
DATA_MIN_BYTES = 64 * 1024
# Of an error answer only the start is read, for the journal's message.
ERROR_BODY_BYTES = 4096


def open_client(concurrency: int, timeout: float) -> tuple[httpx.AsyncClient, FleetTransport]:
    """The shared client and its pool: a connection per vehicle in flight, no proxies from the environment.

    A pull's requests are sequential, so `concurrency` vehicles use at most `concurrency` connections; the
    limit allows twice that, so a slow close never makes a pull wait (the service's semaphore is the bound).
    """
    pool = FleetTransport(
        httpx.Limits(
            max_connections=2 * concurrency,
            max_keepalive_connections=concurrency,
            keepalive_expiry=5.0,
        )
    )
    client = httpx.AsyncClient(
        transport=pool,
        timeout=httpx.Timeout(timeout),
        # Vehicles are reached over the VPN; an HTTP(S)_PROXY meant for the internet must not capture them.
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )
    return client, pool


class VehiclePuller:
    """Requests to one vehicle: `status`, `channels`, `data`, `alarms`, each validated.

    Use as `async with VehiclePuller(...) as puller:` — the vehicle's connection is kept for the pull's
    requests and closed at the end (when the client's pool is a `FleetTransport`).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        target: VehicleTarget,
        api_key: str,
        *,
        timeout: float,
        max_rows: int,
        pool: FleetTransport | None = None,
    ) -> None:
        self._client = client
        self._pool = pool
        self._base = target.base_url
        self._vehicle_id = target.id
        self._headers = {API_KEY_HEADER: api_key}
        self._timeout = timeout
        self._max_rows = max_rows

    async def __aenter__(self) -> VehiclePuller:
        if self._pool is not None:
            await self._pool.hold(self._base)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            await self._pool.release(self._base)

    async def status(self) -> StatusReply:
        """GET /status."""
        return parse_status(await self._get("status", "/status", None, STATUS_MAX_BYTES))

    async def channels(self) -> tuple[list[ChannelInfo], dict[str, int]]:
        """GET /channels: the valid channel definitions and the count of rejected entries by reason."""
        channels, rejected = parse_channels(
            await self._get("channels", "/channels", None, CHANNELS_MAX_BYTES)
        )
        return channels, dict(rejected)

    def limit_rows(self, agent_limit: int | None) -> None:
        """Ask for no more rows per page than the agent says it serves (`/status.limits.row_limit`)."""
        if agent_limit is not None:
            self._max_rows = min(self._max_rows, agent_limit)

    async def data(
        self, start: datetime, end: datetime, *, channels: Collection[int] | None, now: datetime
    ) -> DataPage:
        """GET /data for [start, end) with the row cap as `limit`; rows validated against `channels` (if any)."""
        params = {"from": format_time(start), "to": format_time(end), "limit": str(self._max_rows)}
        # One timestamp may exceed the limit (contract §5); it cannot hold more rows than channels.
        cap = max(DATA_MIN_BYTES, max(self._max_rows, MAX_CHANNELS) * DATA_BYTES_PER_ROW)
        doc = await self._get("data", "/data", params, cap)
        return parse_data(
            doc,
            vehicle_id=self._vehicle_id,
            start=start,
            end=end,
            channels=channels,
            now=now,
            max_rows=self._max_rows,
        )

    async def alarms(self, start: datetime, end: datetime, *, now: datetime) -> AlarmPage:
        """GET /alarms for [start, end)."""
        params = {"from": format_time(start), "to": format_time(end)}
        doc = await self._get("alarms", "/alarms", params, ALARMS_MAX_BYTES)
        return parse_alarms(doc, start=start, end=end, now=now)

    async def _get(self, endpoint: str, path: str, params: dict[str, str] | None, cap: int) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            body = await self._fetch(endpoint, path, params, cap)
            doc = decode_json(endpoint, body)
            outcome = "ok"
            return doc
        except PullError as err:
            outcome = err.kind
            raise
        finally:
            metrics.REQUESTS.labels(endpoint, outcome).inc()
            metrics.REQUEST_DURATION.labels(endpoint).observe(time.perf_counter() - started)

    async def _fetch(self, endpoint: str, path: str, params: dict[str, str] | None, cap: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.stream(
                    "GET", self._base + path, params=params, headers=self._headers
                ) as response:
                    if response.status_code != 200:
                        raise await _status_error(endpoint, response)
                    declared = response.headers.get("content-length")
                    if (
                        declared is not None
                        and declared.isascii()
                        and declared.isdigit()
                        and int(declared) > cap
                    ):
                        raise PullProtocolError(
                            endpoint, f"the body ({declared} bytes) is over the {cap}-byte cap"
                        )
                    return await _read_capped(endpoint, response, cap)
        except TimeoutError:
            raise PullTimeout(endpoint, f"no complete answer within {self._timeout:g} s") from None
        except httpx.TimeoutException:
            raise PullTimeout(endpoint, f"no complete answer within {self._timeout:g} s") from None
        except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.CloseError) as err:
            raise PullUnreachable(endpoint, _describe(err)) from None
        except (httpx.RemoteProtocolError, httpx.DecodingError) as err:
            raise PullProtocolError(endpoint, _describe(err)) from None
        except httpx.HTTPError as err:
            raise PullError(endpoint, _describe(err)) from None


async def _read_capped(endpoint: str, response: httpx.Response, cap: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise PullProtocolError(endpoint, f"the body is over the {cap}-byte cap")
    metrics.RESPONSE_BYTES.inc(len(body))
    return bytes(body)


async def _status_error(endpoint: str, response: httpx.Response) -> PullError:
    """Turn a non-200 answer into an error carrying the contract's `error.message` when there is one."""
    status = response.status_code
    head = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            head += chunk
            if len(head) >= ERROR_BODY_BYTES:
                break
    except httpx.HTTPError:
        pass
    message = response.reason_phrase or "error"
    try:
        detail = decode_json(endpoint, bytes(head[:ERROR_BODY_BYTES]))["error"]
        text = f"{detail['code']}: {detail['message']}"
        if isinstance(detail["code"], str) and isinstance(detail["message"], str):
            message = text[:300]
    except (PullError, KeyError, TypeError):
        pass
    if status in (401, 403):
        return PullAuthError(endpoint, f"HTTP {status}: the vehicle refused the API key ({message})")
    return PullHttpError(endpoint, status, message)


def _describe(err: httpx.HTTPError) -> str:
    # httpx messages name the URL at most (never headers), so they are safe to journal.
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:300]
