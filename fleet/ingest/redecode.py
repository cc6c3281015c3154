"""Re-run the decoder over a device's stored raw frames (after a parser fix) - idempotently.

Frames are read in reception order. FLEX frames carry no layout, so decoding starts from the mask stored
for the device (``devices.flex_mask``) and switches to the mask of every ``*>FLEX`` negotiation found in
the stored stream, exactly as the live session did. The rows are written with ``ON CONFLICT DO UPDATE``:
values from the fixed decoder replace the stored ones, missing rows are added, and a second run changes
nothing. Frames stored as rejected or failed that now decode are marked ``ok``. Nothing is acknowledged
(no device is involved) and raw frames are never modified except for that outcome.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from fleet.db.queries.ingest import get_device, mark_frames_decoded, raw_frames_page, store_batch
from fleet.errors import NotFound
from fleet.ingest.connection import PROTOCOL_TEXT
from fleet.ingest.rows import RowBuilder
from fleet.protocol.navtelecom import (
    NavtelecomSession,
    Negotiation,
    Reply,
    ReplyKind,
    Telemetry,
    TextSession,
    decode_frame,
)
from fleet.protocol.navtelecom.layout import FULL_MASK_BITS

if TYPE_CHECKING:
    from fleet.config import Settings
    from fleet.db import Database

log = structlog.get_logger(__name__)

PAGE_FRAMES = 2000
_SKIPPED_TYPES = frozenset({"handshake", "answer", "unframable", "ping"})


@dataclass
class RedecodeReport:
    """What a redecode run did."""

    imei: str
    device_id: int
    frames: int = 0
    decoded: int = 0
    records: int = 0
    positions: int = 0
    now_ok: int = 0
    skipped: int = 0
    failed: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "imei": self.imei,
            "device_id": self.device_id,
            "frames": self.frames,
            "decoded": self.decoded,
            "records": self.records,
            "positions_written": self.positions,
            "frames_now_ok": self.now_ok,
            "skipped": self.skipped,
            "failed": dict(self.failed),
        }


def stored_negotiation(row: Any, field100_size: int) -> Negotiation | None:
    """Return the negotiation stored for a device row (None when it never negotiated)."""
    mask = row["flex_mask"]
    if not mask:
        return None
    struct_version = row["flex_struct_version"] or 30
    bits = FULL_MASK_BITS.get(struct_version)
    # The table keeps the mask bytes, not the bit count: the version's full size fits whenever the byte
    # count matches it; otherwise every bit of the mask counts (up to the 255 fields that exist).
    if bits is None or (bits + 7) // 8 != len(mask):
        bits = min(len(mask) * 8, 255)
    return Negotiation(
        row["flex_protocol_version"] or struct_version, struct_version, bits, bytes(mask), field100_size
    )


async def redecode(
    db: Database,
    settings: Settings,
    imei: str,
    since: datetime,
    until: datetime | None = None,
    page_frames: int = PAGE_FRAMES,
) -> RedecodeReport:
    """Decode again every stored frame of ``imei`` received in [since, until) and upsert the results."""
    async with db.system() as conn:
        device = await get_device(conn, imei)
    if device is None:
        raise NotFound(f"no device with IMEI {imei}")
    report = RedecodeReport(imei, device["id"])
    negotiation = stored_negotiation(device, settings.flex_field100_size)
    builder = RowBuilder()
    after: tuple[datetime, int] | None = None
    while True:
        async with db.system() as conn:
            frames = await raw_frames_page(conn, device["id"], since, until, after, page_frames)
        if not frames:
            break
        after = (frames[-1]["received_at"], frames[-1]["id"])
        positions: list[tuple[Any, ...]] = []
        can: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        now_ok: list[tuple[int, datetime]] = []
        for frame in frames:
            report.frames += 1
            data = bytes(frame["data"])
            if frame["frame_type"] in _SKIPPED_TYPES or not data:
                report.skipped += 1
                continue
            if frame["frame_type"] == "negotiation":
                negotiation = _renegotiate(data, negotiation, imei) or negotiation
                report.skipped += 1
                continue
            if frame["protocol"] == PROTOCOL_TEXT:
                outputs = TextSession().feed(data)
                output = outputs[0] if len(outputs) == 1 else None
            else:
                output = decode_frame(data, negotiation, imei=imei)
            if not isinstance(output, Telemetry):
                reason = getattr(getattr(output, "code", None), "value", "not_telemetry")
                report.failed[reason] += 1
                continue
            rows = builder.telemetry(device["id"], output, frame["received_at"])
            positions.extend(rows.positions)
            can.extend(rows.can)
            events.extend(rows.events)
            report.decoded += 1
            report.records += rows.records
            if frame["outcome"] != "ok":
                now_ok.append((frame["id"], frame["received_at"]))
        if positions or can or events or now_ok:
            async with db.system() as conn:
                outcome = await store_batch(conn, positions=positions, can=can, events=events, upsert=True)
                await mark_frames_decoded(conn, now_ok)
            report.positions += outcome.positions_stored
            report.now_ok += len(now_ok)
        if len(frames) < page_frames:
            break
    log.info("redecode_done", **report.as_dict())
    return report


def _renegotiate(data: bytes, current: Negotiation | None, imei: str) -> Negotiation | None:
    """Return the negotiation a stored ``*>FLEX`` frame established (None if it established none)."""
    session = NavtelecomSession.restore(current, imei=imei)
    session.negotiation = None
    outputs = session.feed(data)
    if len(outputs) == 1 and isinstance(outputs[0], Reply) and outputs[0].kind is ReplyKind.NEGOTIATION:
        return session.negotiation
    return None
