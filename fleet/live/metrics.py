"""Prometheus metrics of the live streams (names agreed in INTERFACES.md §5; no per-vehicle or per-user labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STREAMS = ("vehicle", "fleet")
MESSAGE_TYPES = (
    "hello",
    "position",
    "positions",
    "values",
    "status",
    "alarm",
    "event",
    "command",
    "heartbeat",
    "pong",
    "auth_ok",
    "error",
)
REJECT_REASONS = (
    "unauthorized",
    "token_expired",
    "forbidden",
    "not_found",
    "too_many_connections",
    "bad_message",
    "auth_timeout",
    "unavailable",
)

VIEWERS = Gauge("fleet_ws_viewers", "WebSocket viewers connected to this process", ["stream"])
MESSAGES = Counter(
    "fleet_ws_messages_total",
    "Messages queued for WebSocket viewers (sent, or later dropped: see fleet_ws_dropped_total)",
    ["stream", "type"],
)
DROPPED = Counter(
    "fleet_ws_dropped_total",
    "Messages a slow viewer never got: replaced by a newer value of the same kind, or pushed out of its queue",
    ["stream"],
)
REJECTED = Counter(
    "fleet_ws_rejected_total", "WebSocket connections refused or closed by the server, by reason", ["reason"]
)
POLLERS = Gauge("fleet_live_pollers", "Live pollers of watched pull vehicles running in this process")
POLL_FAILURES = Counter(
    "fleet_live_poll_failures_total", "Live polls (GET /data/latest) that failed, any reason"
)

# Children resolved once: the fan-out path increments them thousands of times a second.
MESSAGE_COUNTERS = {(s, t): MESSAGES.labels(s, t) for s in STREAMS for t in MESSAGE_TYPES}
DROP_COUNTERS = {s: DROPPED.labels(s) for s in STREAMS}
VIEWER_GAUGES = {s: VIEWERS.labels(s) for s in STREAMS}
for _reason in REJECT_REASONS:
    REJECTED.labels(_reason)
