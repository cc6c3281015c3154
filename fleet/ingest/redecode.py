"""Re-run the decoder over a device's stored raw frames (after a parser fix) - idempotently.

Frames are read in reception order; each is decoded by the protocol that wrote it (``raw_frames.protocol``,
see :func:`fleet.protocol.registry.protocol_for_archive`) through that protocol's
:class:`fleet.protocol.base.Redecoder`, which starts from the state stored for the device
(``devices.protocol_state``, e.g. a FLEX mask) and follows state changes found in the stored stream, exactly
as the live session did. The rows are written with ``ON CONFLICT DO UPDATE``: values from the fixed decoder
replace the stored ones, missing rows are added, and a second run changes nothing. Frames stored as
rejected or failed that now decode are marked ``ok``. Nothing is acknowledged (no device is involved) and
raw frames are never modified except for that outcome.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from fleet.db.queries.ingest import get_device, mark_frames_decoded, raw_frames_page, store_batch
from fleet.errors import NotFound
from fleet.protocol.base import ProtocolSpec, Redecoder, RowSource, Telemetry
from fleet.protocol.registry import protocol_for_archive
from fleet.protocol.rows import CanRow, EventRow, PositionRow

if TYPE_CHECKING:
    from fleet.config import Settings
    from fleet.db import Database

log = structlog.get_logger(__name__)

PAGE_FRAMES = 2000


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
    state = device["protocol_state"]
    if isinstance(state, str):
        state = json.loads(state)
    decoders: dict[str, tuple[Redecoder, RowSource]] = {}

    def decoder_for(spec: ProtocolSpec) -> tuple[Redecoder, RowSource]:
        known = decoders.get(spec.name)
        if known is None:
            own_state = state if spec.name == device["protocol"] else None
            known = decoders[spec.name] = (spec.new_redecoder(own_state, settings), spec.new_rows())
        return known

    after: tuple[datetime, int] | None = None
    while True:
        async with db.system() as conn:
            frames = await raw_frames_page(conn, device["id"], since, until, after, page_frames)
        if not frames:
            break
        after = (frames[-1]["received_at"], frames[-1]["id"])
        positions: list[PositionRow] = []
        can: list[CanRow] = []
        events: list[EventRow] = []
        now_ok: list[tuple[int, datetime]] = []
        for frame in frames:
            report.frames += 1
            spec = protocol_for_archive(frame["protocol"])
            if spec is None:
                report.failed["unknown_protocol"] += 1
                continue
            decoder, rows_source = decoder_for(spec)
            output = decoder.decode(frame["frame_type"], bytes(frame["data"]))
            if output is None:
                report.skipped += 1
                continue
            if not isinstance(output, Telemetry):
                reason = str(getattr(output, "code", "not_telemetry"))
                report.failed[reason] += 1
                continue
            rows = rows_source.telemetry(device["id"], output, frame["received_at"])
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
