"""The write side: ``POST /ingest``, through which a vehicle computer feeds the buffer.

A request is checked whole before anything is stored: its size, its shape, every channel id, every time. It is
idempotent, so a writer that got no answer can send it again: repeated samples are ignored, repeated alarms
only add a resolution.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from fleet.agent.channels import Channel
from fleet.agent.deps import Runtime
from fleet.agent.errors import BadRequest, PayloadTooLarge, UnknownChannel
from fleet.agent.runtime import AgentRuntime
from fleet.agent.store import Alarm, Sample
from fleet.agent.times import TimeFormatError, now_ms, parse_time, seconds_to_ms

router = APIRouter()

INGEST_SOURCE = "ingest"

# A writer's clock may run a little ahead of the agent's; further ahead, it is wrong, and a row stamped in the
# future would sit beyond every window the server pulls until the agent's clock caught up.
MAX_FUTURE_MS = 300_000


def _wire_time_to_ms(value: object) -> int:
    """Read a JSON time (ISO-8601 text, or epoch seconds as a number) as epoch milliseconds."""
    try:
        if isinstance(value, str):
            return parse_time(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return seconds_to_ms(value)
    except TimeFormatError as err:
        raise ValueError(str(err)) from err
    raise ValueError("a time must be ISO-8601 text or epoch seconds")


ChannelId = Annotated[int, Field(ge=0, le=2**31 - 1)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# Parsed before the strict int check, so a model field holds epoch milliseconds.
WireTime = Annotated[int, BeforeValidator(_wire_time_to_ms)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class IngestRow(_Strict):
    """One sample sent by a writer."""

    channel_id: ChannelId
    time: WireTime
    value: FiniteFloat


class IngestAlarm(_Strict):
    """One alarm (new, or a resolution of an earlier one with the same ``alarm_id``)."""

    alarm_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    channel_id: ChannelId | None = None
    level: Literal["info", "warning", "critical"]
    message: Annotated[str, Field(min_length=1, max_length=500)]
    raised_at: WireTime
    resolved_at: WireTime | None = None

    @model_validator(mode="after")
    def _order(self) -> IngestAlarm:
        if self.resolved_at is not None and self.resolved_at < self.raised_at:
            raise ValueError("resolved_at is earlier than raised_at")
        return self


class IngestChannel(_Strict):
    """A channel declaration (new, or replacing the name, unit and range of an existing id)."""

    channel_id: ChannelId
    name: Annotated[str, Field(min_length=1, max_length=100)]
    unit: Annotated[str, Field(max_length=20)] = ""
    phys_min: FiniteFloat
    phys_max: FiniteFloat

    @model_validator(mode="after")
    def _range(self) -> IngestChannel:
        if self.phys_min > self.phys_max:
            raise ValueError("phys_min is greater than phys_max")
        return self


class IngestBody(_Strict):
    """The body of ``POST /ingest``; every part is optional."""

    channels: list[IngestChannel] = []
    rows: list[IngestRow] = []
    alarms: list[IngestAlarm] = []


async def read_capped_body(request: Request, max_bytes: int) -> bytes:
    """Read the request body, refusing (413) as soon as it exceeds ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    # A chunked upload has no Content-Length, so the cap is enforced while reading too.
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_ingest(raw: bytes, runtime: AgentRuntime) -> IngestBody:
    """Validate a raw body against the shape and the configured caps."""
    try:
        body = IngestBody.model_validate_json(raw)
    except ValidationError as err:
        raise BadRequest("invalid_body", _describe(err)) from err
    config = runtime.config
    if len(body.rows) > config.ingest_max_rows:
        raise PayloadTooLarge(f"{len(body.rows)} rows; at most {config.ingest_max_rows} per request")
    if len(body.alarms) > config.ingest_max_alarms:
        raise PayloadTooLarge(f"{len(body.alarms)} alarms; at most {config.ingest_max_alarms} per request")
    return body


async def apply_ingest(runtime: AgentRuntime, body: IngestBody) -> dict[str, Any]:
    """Store a validated ingest body and return the counts the endpoint reports."""
    store = runtime.store
    declared = {c.channel_id for c in body.channels}
    unknown = sorted({r.channel_id for r in body.rows} - declared - store.channel_ids)
    if unknown:
        raise BadRequest("unknown_channel", str(UnknownChannel(unknown)))
    now = now_ms()
    samples = [Sample(r.channel_id, r.time, r.value) for r in body.rows]
    alarms = [
        Alarm(a.alarm_id, a.channel_id, a.level, a.message, a.raised_at, a.resolved_at) for a in body.alarms
    ]
    times = [s.time for s in samples] + [a.raised_at for a in alarms]
    times += [a.resolved_at for a in alarms if a.resolved_at is not None]
    if times and max(times) > now + MAX_FUTURE_MS:
        limit_s = MAX_FUTURE_MS // 1000
        raise BadRequest("time_in_future", f"a time is more than {limit_s} s ahead of the agent's clock")
    if body.channels:
        await store.upsert_channels(
            Channel(c.channel_id, c.name, c.unit, c.phys_min, c.phys_max) for c in body.channels
        )
    written = await store.append_rows(samples)
    alarms_written = await store.upsert_alarms(alarms, changed_at=now, source=INGEST_SOURCE) if alarms else 0
    served = runtime.served_until
    return {
        "channels_written": len(body.channels),
        "rows_written": written.written,
        "rows_duplicate": written.duplicates,
        "alarms_written": alarms_written,
        "late_rows": sum(1 for s in samples if s.time < served) if served is not None else 0,
    }


@router.post("/ingest")
async def ingest(request: Request, runtime: Runtime) -> dict[str, Any]:
    """Append samples, alarms and channel declarations sent by the vehicle computer."""
    raw = await read_capped_body(request, runtime.config.ingest_max_bytes)
    return await apply_ingest(runtime, parse_ingest(raw, runtime))


def _describe(err: ValidationError, shown: int = 5) -> str:
    problems = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors()[:shown]]
    more = err.error_count() - shown
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
