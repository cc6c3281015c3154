"""bench/common.py: the statistics every benchmark quotes and the result files it writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import BenchReport, load_result, median, percentile, ratio, spread  # noqa: E402


def test_percentiles_interpolate_between_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert median(values) == 30.0
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 25) == 20.0
    assert percentile(values, 90) == pytest.approx(46.0)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None and median([]) is None


def test_spread_and_ratio() -> None:
    stats = spread([4.0, 1.0, 3.0, 2.0])
    assert stats["n"] == 4
    assert (stats["min"], stats["median"], stats["max"]) == (1.0, 2.5, 4.0)
    assert stats["relative_spread"] == pytest.approx(3.0 / 2.5, abs=1e-3)
    assert spread([]) == {"n": 0}
    assert ratio(27_900, 51_000) == pytest.approx(0.547, abs=1e-3)
    assert ratio(1.0, 0.0) is None and ratio(None, 2.0) is None


def test_report_writes_timestamped_and_latest_files(tmp_path: Path) -> None:
    report = BenchReport("demo", parameters={"records": 10}, results_dir=tmp_path, watch_busy=False)
    report.add_samples("rate", [100.0, 120.0, 110.0])
    report.add_baseline("copy_rows_per_s", 200.0)
    report.add_ratio("rate_to_copy", 110.0, 200.0)
    assert report.add_target("rate", 110.0, 100.0) is True
    assert report.add_target("p99_ms", 300.0, 250.0, higher_is_better=False) is False
    report.results = {"anything": [1, 2]}
    stamped, latest = report.write(echo=False)

    assert stamped.parent == latest.parent == tmp_path
    assert stamped.name.startswith("demo-") and stamped.name.endswith("Z.json")
    assert latest.name == "demo.json"
    document = json.loads(latest.read_text())
    assert document == json.loads(stamped.read_text())
    assert document["benchmark"] == "demo" and document["mode"] == "full"
    machine = document["machine"]
    assert machine["cores"] >= 1 and machine["python"]
    assert len(machine["load_average_before"]) == len(machine["load_average_after"]) == 3
    assert document["samples"]["rate"] == [100.0, 120.0, 110.0]
    assert document["stats"]["rate"]["median"] == 110.0
    assert document["ratios"]["rate_to_copy"] == 0.55
    assert document["targets"]["enforced"] is True
    assert document["targets"]["p99_ms"]["met"] is False
    assert not report.targets_met()
    assert load_result("demo", tmp_path) == document


def test_quick_report_neither_replaces_the_full_result_nor_enforces_targets(tmp_path: Path) -> None:
    report = BenchReport("demo", quick=True, results_dir=tmp_path, watch_busy=False)
    report.add_target("rate", 1.0, 100.0)
    _stamped, latest = report.write(echo=False)
    assert latest.name == "demo-quick.json"
    assert not (tmp_path / "demo.json").exists()
    assert json.loads(latest.read_text())["targets"]["enforced"] is False
    assert report.targets_met()
