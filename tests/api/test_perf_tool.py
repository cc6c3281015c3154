"""tools/perf_sanity.py runs end to end (tiny load): private database, seeded day of 1 Hz data, JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_perf_sanity_spawn_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "perf_sanity.py"),
            "--spawn",
            "--runs",
            "20",
            "--concurrency",
            "4",
            "--history-runs",
            "1",
            "--vehicles",
            "3",
            "--server-log",
            str(tmp_path / "server.log"),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["history_points"] == 86_400
    assert report["machine"]["cpus"] >= 1
    for name in ("health", "vehicles", "latest_position", "history_day_1hz"):
        figures = report["results"][name]
        assert figures["errors"] == 0 and figures["p99_ms"] > 0, name
        assert figures["api_cpu_ms_per_request"] >= 0
        assert figures["client_cpu_ms_per_request"] >= 0  # the load generator's own CPU
    assert report["results"]["vehicles"]["mean_bytes"] > 0
    assert set(report["targets"]) == {"vehicles_p99_ms", "history_day_ms"}
