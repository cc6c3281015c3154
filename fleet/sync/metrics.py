"""Prometheus metrics of the sync service (default registry; base units; no per-vehicle labels).

Per-vehicle detail lives in `sync_journal`; metrics only carry bounded labels: the endpoint (four values), the
outcome class, the journal status and the rejection reason.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CYCLES = Counter("fleet_sync_cycles_total", "Sync cycles run, by outcome (ok or failed)", ["outcome"])
CYCLE_DURATION = Histogram(
    "fleet_sync_cycle_duration_seconds",
    "Wall time of one sync cycle over all due vehicles",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
VEHICLE_SYNCS = Counter(
    "fleet_sync_vehicle_syncs_total", "Vehicle pulls, by journal status (ok, timeout, error)", ["status"]
)
REQUESTS = Counter(
    "fleet_sync_requests_total",
    "Requests to vehicles' Outbound API, by endpoint and outcome (ok or the error kind)",
    ["endpoint", "outcome"],
)
REQUEST_DURATION = Histogram(
    "fleet_sync_request_duration_seconds",
    "Time of one request to a vehicle, body included",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESPONSE_BYTES = Counter("fleet_sync_response_bytes_total", "Body bytes received from vehicles")
ROWS_WRITTEN = Counter("fleet_sync_rows_written_total", "Measurements inserted (duplicates not counted)")
ROWS_REJECTED = Counter(
    "fleet_sync_rows_rejected_total", "Entries dropped from vehicles' answers, by reason", ["reason"]
)
WRITE_BATCHES = Counter(
    "fleet_sync_write_batches_total", "Group-commit transactions, by outcome", ["outcome"]
)
WRITE_DURATION = Histogram(
    "fleet_sync_write_duration_seconds",
    "Time of one group-commit transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAST_CYCLE_FAILED = Gauge(
    "fleet_sync_last_cycle_failed_vehicles", "Vehicles whose pull failed (timeout or error) in the last cycle"
)
LAST_CYCLE_END = Gauge("fleet_sync_last_cycle_end_timestamp_seconds", "Unix time the last cycle ended")
