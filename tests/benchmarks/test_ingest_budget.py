"""bench/bench_ingest.py: the CPU budget that splits the ratio to COPY, and the writer-state classes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import _writer_state, cpu_budget  # noqa: E402


def test_cpu_budget_gives_the_ratio_the_cpu_cost_alone_allows() -> None:
    full = {
        "cpu": {
            "server_cores": 0.6,
            "postgres_cores": 0.8,
            "simulator_cores": 0.2,
            "server_us_per_record": 16.0,
            "postgres_us_per_record": 22.0,
            "simulator_us_per_record": 4.0,
        }
    }
    copy = {"rows_per_s": 100_000.0, "postgres_us_per_row": 10.0}
    budget = cpu_budget(full, copy)
    cores = os.cpu_count() or 1
    assert budget["us_per_record"] == 42.0
    assert budget["in_copy_rows"] == 4.2
    assert budget["cores_used"] == 1.6
    assert budget["ceiling_records_per_s"] == round(cores / 42e-6)
    assert budget["ceiling_ratio_to_raw_copy"] == pytest.approx(cores / 42e-6 / 100_000, abs=1e-3)
    # Without the figures (a run that stored nothing) there is no budget rather than a made-up one.
    assert cpu_budget({"cpu": {}}, copy) == {}
    assert cpu_budget(full, {"rows_per_s": 0.0, "postgres_us_per_row": None}) == {}


@pytest.mark.parametrize(
    ("state", "wait_type", "wait", "expected"),
    [
        ("active", None, None, "executing"),
        ("active", "Client", "ClientRead", "waiting_for_server"),  # a COPY waiting for its data
        ("idle in transaction", "Client", "ClientRead", "waiting_for_server"),
        ("active", "IO", "WALSync", "io"),
        ("active", "LWLock", "WALWrite", "io"),
        ("active", "Lock", "transactionid", "other_wait"),
        ("idle", "Client", "ClientRead", "idle"),
    ],
)
def test_writer_states(state: str, wait_type: str | None, wait: str | None, expected: str) -> None:
    assert _writer_state(state, wait_type, wait) == expected
