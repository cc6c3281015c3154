"""Ingest metrics (Prometheus, process-wide) and per-service statistics (the `/api/v2/stats` view).

Prometheus names follow the base-unit rules: seconds, `_total` counters, and only bounded label values
(protocol names, frame types, reason codes) - never a device. :class:`IngestStats` keeps the same numbers per service
instance, plus an ACK-latency reservoir for percentiles, and renders them as a plain dict.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter as Tally
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS_ACTIVE = Gauge("fleet_ingest_connections", "Open device connections", ["protocol"])
CONNECTIONS_OPENED = Counter(
    "fleet_ingest_connections_opened_total", "Device connections accepted", ["protocol"]
)
CONNECTIONS_REFUSED = Counter(
    "fleet_ingest_connections_refused_total",
    "Connections refused (limit, unknown or invalid device)",
    ["protocol", "reason"],
)
CONNECTIONS_CLOSED = Counter(
    "fleet_ingest_connections_closed_total", "Connections closed, by reason", ["reason"]
)
FRAMES = Counter("fleet_ingest_frames_total", "Frames received, by type", ["protocol", "type"])
RECORDS = Counter("fleet_ingest_records_total", "Records decoded, by frame type", ["protocol", "type"])
DECODE_ERRORS = Counter(
    "fleet_ingest_decode_errors_total",
    "Frames rejected or streams broken, by reason",
    ["protocol", "reason"],
)
ROWS_STORED = Counter("fleet_ingest_rows_stored_total", "Rows committed, by table", ["table"])
DUPLICATES = Counter(
    "fleet_ingest_records_duplicate_total", "Retransmitted records recognised and not stored again"
)
ACK_LATENCY = Histogram(
    "fleet_ingest_ack_latency_seconds",
    "From receiving a telemetry frame to sending its acknowledgement (after commit)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_RECORDS = Histogram(
    "fleet_ingest_batch_records",
    "Records per committed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
BATCH_SECONDS = Histogram(
    "fleet_ingest_batch_duration_seconds",
    "Time to write and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_PATHS = Counter(
    "fleet_ingest_batches_total",
    "Committed batches, by write mode (direct: COPY into the month's partitions; staging: through the parents)",
    ["mode"],
)
DIRECT_FALLBACKS = Counter(
    "fleet_ingest_direct_fallbacks_total",
    "Batches a direct COPY was refused for and that took the staging path, by reason",
    ["reason"],
)
BATCH_FAILURES = Counter("fleet_ingest_batch_failures_total", "Batch commits that failed, by kind", ["kind"])
QUEUE_RECORDS = Gauge("fleet_ingest_queue_records", "Records waiting for the writer")
QUEUE_BYTES = Gauge("fleet_ingest_queue_bytes", "Frame bytes waiting for the writer")
BACKPRESSURE_ACTIVE = Gauge("fleet_ingest_backpressure_active", "1 while sockets are paused for the writer")
BACKPRESSURE_EPISODES = Counter("fleet_ingest_backpressure_episodes_total", "Times reading was paused")
BACKPRESSURE_SECONDS = Counter("fleet_ingest_backpressure_seconds_total", "Time spent with reading paused")
RAW_FRAMES_LIMITED = Counter(
    "fleet_ingest_raw_frames_limited_total",
    "Raw frames of unidentified or failing peers kept only as an excerpt, or not kept (hourly budget)",
    ["protocol", "result"],
)
DEVICES_REGISTERED = Counter(
    "fleet_ingest_devices_registered_total", "Unknown devices registered on first contact"
)

LATENCY_SAMPLES = 4096


class IngestStats:
    """Counters of one ingest service; mirrors what it adds to the Prometheus metrics."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.connections_opened = 0
        self.connections_refused: Tally[str] = Tally()
        self.connections_closed: Tally[str] = Tally()
        self.frames: Tally[str] = Tally()
        self.records: Tally[str] = Tally()
        self.decode_errors: Tally[str] = Tally()
        self.rows_stored: Tally[str] = Tally()
        self.duplicates = 0
        self.batches = 0
        self.batch_records_total = 0
        self.last_batch_records = 0
        self.max_batch_records = 0
        self.batch_failures: Tally[str] = Tally()
        self.batch_paths: Tally[str] = Tally()
        self.direct_fallbacks: Tally[str] = Tally()
        self.backpressure_episodes = 0
        self.devices_registered = 0
        self.raw_limited: Tally[str] = Tally()  # excerpt, dropped
        self._frame_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._latency = array("d", bytes(8 * LATENCY_SAMPLES))
        self._latency_count = 0

    # --- recording (each also feeds Prometheus) --------------------------------------------------------
    def frame(self, kind: str, records: int = 0, protocol: str = "") -> None:
        if type(kind) is not str:
            kind = str(kind)  # a protocol's StrEnum label: its plain value in the stats
        self.frames[kind] += 1
        key = (protocol, kind)
        children = self._frame_children.get(key)
        if children is None:  # labels() costs a locked lookup: resolve each frame type once
            children = self._frame_children[key] = (
                FRAMES.labels(protocol, kind),
                RECORDS.labels(protocol, kind),
            )
        children[0].inc()
        if records:
            self.records[kind] += records
            children[1].inc(records)

    def decode_error(self, reason: str, protocol: str = "") -> None:
        reason = str(reason)
        self.decode_errors[reason] += 1
        DECODE_ERRORS.labels(protocol, reason).inc()

    def refused(self, reason: str, protocol: str = "") -> None:
        self.connections_refused[reason] += 1
        CONNECTIONS_REFUSED.labels(protocol, reason).inc()

    def raw_limit(self, result: str, protocol: str) -> None:
        self.raw_limited[result] += 1
        RAW_FRAMES_LIMITED.labels(protocol, result).inc()

    def closed(self, reason: str) -> None:
        self.connections_closed[reason] += 1
        CONNECTIONS_CLOSED.labels(reason).inc()

    def ack_latency(self, seconds: float) -> None:
        self._latency[self._latency_count % LATENCY_SAMPLES] = seconds
        self._latency_count += 1
        ACK_LATENCY.observe(seconds)

    def batch(self, records: int, seconds: float) -> None:
        self.batches += 1
        self.batch_records_total += records
        self.last_batch_records = records
        self.max_batch_records = max(self.max_batch_records, records)
        BATCH_RECORDS.observe(records)
        BATCH_SECONDS.observe(seconds)

    def stored(self, table: str, rows: int) -> None:
        if rows:
            self.rows_stored[table] += rows
            ROWS_STORED.labels(table).inc(rows)

    def duplicate(self, count: int) -> None:
        if count > 0:
            self.duplicates += count
            DUPLICATES.inc(count)

    def batch_path(self, path: str) -> None:
        self.batch_paths[path] += 1
        BATCH_PATHS.labels(path).inc()

    def direct_fallback(self, reason: str) -> None:
        self.direct_fallbacks[reason] += 1
        DIRECT_FALLBACKS.labels(reason).inc()

    def batch_failure(self, kind: str) -> None:
        self.batch_failures[kind] += 1
        BATCH_FAILURES.labels(kind).inc()

    # --- reading -------------------------------------------------------------------------------------------
    def latency_percentiles(self) -> dict[str, float | None]:
        """Return p50/p90/p99/max ACK latency in milliseconds over the most recent acknowledgements."""
        count = min(self._latency_count, LATENCY_SAMPLES)
        if not count:
            return {"p50": None, "p90": None, "p99": None, "max": None}
        samples = sorted(self._latency[:count])

        def pick(q: float) -> float:
            return round(samples[min(count - 1, int(q * count))] * 1000, 3)

        return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(samples[-1] * 1000, 3)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.monotonic() - self.started, 1),
            "connections_opened": self.connections_opened,
            "connections_refused": dict(self.connections_refused),
            "connections_closed": dict(self.connections_closed),
            "frames": dict(self.frames),
            "records": dict(self.records),
            "decode_errors": dict(self.decode_errors),
            "stored": dict(self.rows_stored),
            "duplicates": self.duplicates,
            "devices_registered": self.devices_registered,
            "raw_frames_limited": dict(self.raw_limited),
            "ack_latency_ms": self.latency_percentiles(),
            "batches": {
                "count": self.batches,
                "last_records": self.last_batch_records,
                "max_records": self.max_batch_records,
                "mean_records": round(self.batch_records_total / self.batches, 1) if self.batches else 0,
                "failures": dict(self.batch_failures),
                "modes": dict(self.batch_paths),
                "direct_fallbacks": dict(self.direct_fallbacks),
            },
        }
