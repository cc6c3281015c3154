"""Small pure pieces of the operations tooling: quantiles from buckets, socket tables, log lines, labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config import Settings
from fleet.db.metrics import error_kind, operation
from fleet.observability.logs import format_line
from fleet.observability.scrape import Snapshot, quantile, rate
from fleet.observability.security import check_bindings, listening_sockets

EXPOSITION = """# HELP h_seconds x
# TYPE h_seconds histogram
h_seconds_bucket{le="0.1"} 50.0
h_seconds_bucket{le="0.5"} 90.0
h_seconds_bucket{le="1.0"} 100.0
h_seconds_bucket{le="+Inf"} 100.0
h_seconds_count 100.0
h_seconds_sum 20.0
# HELP c_total y
# TYPE c_total counter
c_total{kind="a"} 10.0
c_total{kind="b"} 5.0
"""


def test_quantile_interpolates_like_prometheus() -> None:
    snap = Snapshot.parse(EXPOSITION, taken=100.0)
    assert quantile(0.5, snap, "h_seconds") == pytest.approx(0.1)
    assert quantile(0.7, snap, "h_seconds") == pytest.approx(0.1 + 0.4 * (70 - 50) / 40)
    assert quantile(0.95, snap, "h_seconds") == pytest.approx(0.5 + 0.5 * 0.5)
    later = Snapshot.parse(
        EXPOSITION.replace('c_total{kind="a"} 10.0', 'c_total{kind="a"} 30.0'), taken=110.0
    )
    assert rate(snap, later, "c_total") == pytest.approx(2.0)
    assert rate(snap, later, "c_total", kind="b") == 0.0
    assert rate(None, later, "c_total") is None
    assert snap.by("c_total", "kind") == {"a": 10.0, "b": 5.0}


def test_listening_sockets_are_decoded_and_judged(tmp_path: Path) -> None:
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    )
    (tmp_path / "tcp").write_text(
        header
        + "   0: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0 0 0 0\n"  # 127.0.0.1:8080 listen
        + "   1: 00000000:1538 00000000:0000 0A 0 0 0 0 0 0 0 0\n"  # 0.0.0.0:5432 listen
        + "   2: 00000000:146D 00000000:0000 0A 0 0 0 0 0 0 0 0\n"  # 0.0.0.0:5229 listen
        + "   3: 0100007F:9C40 0100007F:1F90 01 0 0 0 0 0 0 0 0\n"  # established, ignored
    )
    (tmp_path / "tcp6").write_text(
        header + "   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 0 0\n"
    )
    sockets = listening_sockets(tmp_path)
    assert sockets == [("0.0.0.0", 5229), ("0.0.0.0", 5432), ("127.0.0.1", 8080), ("::1", 443)]
    settings = Settings(env="test", server_port=5229, api_port=8080)  # type: ignore[call-arg]
    findings = {f.detail.split(" ")[0]: f.status for f in check_bindings(settings, sockets)}
    assert findings["PostgreSQL"] == "fail"
    assert findings["0.0.0.0:5229"] == "ok"


def test_log_lines_are_filtered_and_rendered() -> None:
    line = '{"event": "ingest_frame_rejected", "level": "warning", "timestamp": "2026-12-01T10:00:00Z", "imei": "1"}'
    text = format_line(line, 20, None)
    assert text is not None and "WARNING" in text.plain and "ingest_frame_rejected" in text.plain
    assert format_line(line, 40, None) is None
    assert format_line(line, 20, "nothing like it") is None
    assert format_line("plain text", 20, None) is not None


def test_database_metric_labels_are_bounded() -> None:
    assert operation("SELECT 1") == "select"
    assert operation("  WITH x AS (SELECT 1) SELECT * FROM x") == "with"
    assert operation("BEGIN; SELECT set_config('app.user_id', '42', true)") == "begin"
    assert operation("VACUUM positions") == "other"
    assert error_kind(TimeoutError()) == "timeout"
    assert error_kind(ConnectionResetError()) == "connection"
