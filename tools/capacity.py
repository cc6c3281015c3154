#!/usr/bin/env python3
"""Capacity model: size a deployment from this project's measured per-core figures (docs/SCALING.md).

    python tools/capacity.py                      # Markdown tables on stdout, JSON in bench/results/capacity.json
    python tools/capacity.py --trackers 20000 --pull-vehicles 500 --api-rps 300

Every input is read from a benchmark result in ``bench/results/`` (nothing is typed in here); each figure in
the output names the file and field it came from, so the tables in docs/SCALING.md can be re-derived after
any benchmark is re-run:

* ``ingest.json`` (``make bench-ingest``): ingest-process and PostgreSQL CPU per record with 10 records per
  frame (trackers uploading a backlog) — the *batched* case;
* ``live.json`` (``make bench-live``), scenario baseline without viewers: the same at **one record per frame**
  (1,000 trackers at 1 Hz, an ingest + API process) — the *real-time* case; a tracker reporting every 10 s
  sends one record per frame, so this is the figure the tracker rows below use, the batched one is the floor;
* ``ingest_processes.json`` (``bench/bench_ingest_processes.py``, when present): records/s with 1, 2 and 4
  ingest processes on one machine;
* ``storage.json`` (``bench/bench_storage.py``): bytes on disk per record, PostgreSQL CPU per record at one
  record per frame and per measurement row of the sync writer;
* ``sync.json`` (``bench/bench_sync.py --output``): the sync process's CPU per measurement row (HTTP pull,
  validation, staging COPY, INSERT);
* ``api.json`` (``tools/perf_sanity.py --spawn``): API-process and PostgreSQL CPU per request;
* ``bus.json`` (``bench/bench_bus.py``): the bus server's CPU per 1,000 delivered events.

The model is linear (CPU seconds per unit × units per second); it holds while nothing else saturates (disk
I/O, network, locks). Cores are of the machine the benchmarks ran on; the results record which.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DAY = 86_400
GIB = 2**30
TIB = 2**40
# Leave headroom: plan each process and the database at this share of a core (bursts, reconnect storms,
# vacuum, backups).
TARGET_UTILISATION = 0.6


class Inputs:
    """The measured figures, each with where it came from."""

    def __init__(self, results: Path) -> None:
        self.results = results
        self.sources: dict[str, str] = {}
        self.values: dict[str, float] = {}
        self.missing: list[str] = []

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.results / name
        if not path.exists():
            self.missing.append(name)
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        if "schema" in data and "benchmark" in data and isinstance(data.get("results"), dict):
            # bench/common.py's document: the benchmark's own figures are under "results".
            inner: dict[str, Any] = data["results"]
            return inner
        return data

    def put(self, key: str, value: float | None, source: str) -> None:
        if value is None:
            self.missing.append(f"{source} ({key})")
            return
        self.values[key] = float(value)
        self.sources[key] = source

    def get(self, key: str) -> float | None:
        return self.values.get(key)


def read_inputs(results: Path) -> Inputs:
    inputs = Inputs(results)
    ingest = inputs.load("ingest.json")
    if ingest:
        by_name = {s["scenario"]: s for s in ingest.get("scenarios", [])}
        half = by_name.get("half_rate_1000", {}).get("cpu", {})
        inputs.put(
            "ingest_us_per_record_batched",
            half.get("server_us_per_record"),
            "ingest.json scenarios[half_rate_1000].cpu.server_us_per_record",
        )
        inputs.put(
            "pg_us_per_record_batched",
            half.get("postgres_us_per_record"),
            "ingest.json scenarios[half_rate_1000].cpu.postgres_us_per_record",
        )
        inputs.put(
            "ingest_max_records_per_s",
            ingest.get("summary", {}).get("max_records_per_s"),
            "ingest.json summary.max_records_per_s",
        )
        idle = by_name.get("idle_rss", {})
        inputs.put(
            "rss_kib_per_connection",
            idle.get("rss_per_idle_connection_kib"),
            "ingest.json scenarios[idle_rss].rss_per_idle_connection_kib",
        )
    live = inputs.load("live.json")
    if live and live.get("scenarios"):
        base = live["scenarios"][0].get("cpu_baseline_without_viewers", {})
        inputs.put(
            "ingest_us_per_record_realtime",
            base.get("server_us_per_record"),
            "live.json scenarios[0].cpu_baseline_without_viewers.server_us_per_record",
        )
        inputs.put(
            "pg_us_per_record_realtime",
            base.get("postgres_us_per_record"),
            "live.json scenarios[0].cpu_baseline_without_viewers.postgres_us_per_record",
        )
        inputs.put(
            "live_server_us_per_message",
            live["scenarios"][0].get("server_cpu_us_per_delivered_message"),
            "live.json scenarios[0].server_cpu_us_per_delivered_message",
        )
    processes = inputs.load("ingest_processes.json")
    if processes:
        # bench/bench_ingest_processes.py: `by_processes` keyed by the number of ingest processes.
        for count, figures in sorted((processes.get("by_processes") or {}).items()):
            for field in ("records_per_s", "records_per_server_core_s", "records_per_postgres_core_s"):
                inputs.put(
                    f"{field}_{count}_processes",
                    figures.get(field),
                    f"ingest_processes.json by_processes[{count}].{field}",
                )
    storage = inputs.load("storage.json")
    if storage:
        inputs.put(
            "bytes_per_tracker_record",
            storage.get("trackers", {}).get("bytes_per_record"),
            "storage.json trackers.bytes_per_record",
        )
        inputs.put(
            "bytes_per_tracker_record_can",
            storage.get("trackers_can", {}).get("bytes_per_record"),
            "storage.json trackers_can.bytes_per_record",
        )
        tables = storage.get("trackers", {}).get("tables", {})
        records = storage.get("trackers", {}).get("records") or 0
        for table in ("positions", "raw_frames"):
            if table in tables and records:
                inputs.put(
                    f"bytes_per_tracker_record_{table}",
                    tables[table]["bytes"] / records,
                    f"storage.json trackers.tables.{table}.bytes / trackers.records",
                )
        inputs.put(
            "bytes_per_measurement",
            storage.get("pull_vehicles", {}).get("bytes_per_record"),
            "storage.json pull_vehicles.bytes_per_record",
        )
        inputs.put(
            "pg_us_per_measurement",
            storage.get("pull_vehicles", {}).get("postgres_us_per_row"),
            "storage.json pull_vehicles.postgres_us_per_row",
        )
        inputs.put(
            "pg_us_per_record_storage_run",
            storage.get("trackers", {}).get("postgres_us_per_record"),
            "storage.json trackers.postgres_us_per_record",
        )
    sync = inputs.load("sync.json")
    if sync:
        cycles = sync.get("cycles", [])
        rows = sum(c.get("rows_written", c.get("rows", 0)) for c in cycles)
        cpu = sum(c.get("sync_process_cpu_s", 0.0) for c in cycles)
        inputs.put(
            "sync_us_per_measurement",
            cpu / rows * 1e6 if rows else None,
            "sync.json sum(cycles[].sync_process_cpu_s) / sum(cycles[].rows_written)",
        )
    api = inputs.load("api.json")
    if api:
        for endpoint in ("vehicles", "latest_position"):
            figures = api.get("results", {}).get(endpoint, {})
            inputs.put(
                f"api_ms_{endpoint}",
                figures.get("api_cpu_ms_per_request"),
                f"api.json results.{endpoint}.api_cpu_ms_per_request",
            )
            inputs.put(
                f"pg_ms_{endpoint}",
                figures.get("db_cpu_ms_per_request"),
                f"api.json results.{endpoint}.db_cpu_ms_per_request",
            )
    bus = inputs.load("bus.json")
    if bus:
        for backend, figures in bus.get("backends", {}).items():
            per = figures.get("cpu_ms_per_1000_delivered", {})
            if per:
                inputs.put(
                    f"bus_{backend}_server_ms_per_1000",
                    per.get("server"),
                    f"bus.json backends.{backend}.cpu_ms_per_1000_delivered.server",
                )
    return inputs


def cores(rate: float, us_per_unit: float | None) -> float | None:
    return None if us_per_unit is None else rate * us_per_unit / 1e6


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def model(inputs: Inputs, args: argparse.Namespace) -> dict[str, Any]:
    v = inputs.get
    tracker_rate = args.trackers / args.tracker_interval
    pull_rate = args.pull_vehicles * args.channels * args.pull_hz
    out: dict[str, Any] = {
        "load": {
            "trackers": args.trackers,
            "tracker_interval_s": args.tracker_interval,
            "tracker_records_per_s": tracker_rate,
            "pull_vehicles": args.pull_vehicles,
            "channels": args.channels,
            "pull_hz": args.pull_hz,
            "measurement_rows_per_s": pull_rate,
            "api_requests_per_s": args.api_rps,
            "viewers_messages_per_s": args.live_messages,
        },
        "target_utilisation": TARGET_UTILISATION,
    }
    per_core = {
        "records_per_s_per_ingest_core_realtime": 1e6 / v("ingest_us_per_record_realtime")
        if v("ingest_us_per_record_realtime")
        else None,
        "records_per_s_per_ingest_core_batched": 1e6 / v("ingest_us_per_record_batched")
        if v("ingest_us_per_record_batched")
        else None,
        "measurement_rows_per_s_per_sync_core": 1e6 / v("sync_us_per_measurement")
        if v("sync_us_per_measurement")
        else None,
        "requests_per_s_per_api_core_vehicles": 1e3 / v("api_ms_vehicles") if v("api_ms_vehicles") else None,
        "requests_per_s_per_api_core_latest": 1e3 / v("api_ms_latest_position")
        if v("api_ms_latest_position")
        else None,
    }
    out["per_core"] = per_core

    rows: list[dict[str, Any]] = []

    def row(part: str, what: str, app: float | None, pg: float | None, note: str) -> None:
        rows.append({"part": part, "what": what, "app_cores": app, "postgres_cores": pg, "note": note})

    row(
        "trackers",
        f"{args.trackers:,} trackers, 1 record / {args.tracker_interval:g} s, one record per frame",
        cores(tracker_rate, v("ingest_us_per_record_realtime")),
        cores(tracker_rate, v("pg_us_per_record_storage_run") or v("pg_us_per_record_realtime")),
        "ours: live.json baseline (ingest + API process, 1,000 records/s: an upper bound); "
        "PostgreSQL: storage.json trackers (2,000 records/s, one per frame)",
    )
    row(
        "trackers",
        "same, batched floor (10 records per frame)",
        cores(tracker_rate, v("ingest_us_per_record_batched")),
        cores(tracker_rate, v("pg_us_per_record_batched")),
        "ingest.json half_rate_1000 (a lower bound: trackers uploading a backlog)",
    )
    row(
        "pull",
        f"{args.pull_vehicles:,} vehicles × {args.channels} channels × {args.pull_hz:g} Hz",
        cores(pull_rate, v("sync_us_per_measurement")),
        cores(pull_rate, v("pg_us_per_measurement")),
        "sync.json (sync process) and storage.json (PostgreSQL, sync writer path)",
    )
    api_app = cores(args.api_rps, v("api_ms_latest_position") and v("api_ms_latest_position") * 1000)
    api_pg = cores(args.api_rps, v("pg_ms_latest_position") and v("pg_ms_latest_position") * 1000)
    row(
        "api",
        f"{args.api_rps:,} requests/s like GET /vehicles/{{id}}/status",
        api_app,
        api_pg,
        "api.json latest_position",
    )
    row(
        "live",
        f"{args.live_messages:,} WebSocket messages/s to viewers",
        cores(args.live_messages, v("live_server_us_per_message")),
        None,
        "live.json server_cpu_us_per_delivered_message",
    )
    out["cpu"] = rows

    def processes(app_cores: float | None) -> int | None:
        return None if app_cores is None else max(1, math.ceil(app_cores / TARGET_UTILISATION))

    # Storage.
    storage: dict[str, Any] = {}
    positions, raw = v("bytes_per_tracker_record_positions"), v("bytes_per_tracker_record_raw_frames")
    if positions is not None and raw is not None:
        storage["positions_gib_per_day"] = tracker_rate * DAY * positions / GIB
        storage["raw_frames_gib_per_day"] = tracker_rate * DAY * raw / GIB
        # Kept at the default retention: POSITION_RETENTION_DAYS=365, RAW_FRAME_RETENTION_DAYS=30.
        storage["tracker_tib_at_default_retention"] = (
            tracker_rate * DAY * (positions * args.position_days + raw * args.raw_frame_days) / TIB
        )
    if v("bytes_per_measurement") is not None:
        per_day = pull_rate * DAY * v("bytes_per_measurement")
        storage["measurement_gib_per_day"] = per_day / GIB
        storage["measurement_tib_at_default_retention"] = per_day * args.measurement_days / TIB
        storage["measurement_rows_per_day"] = pull_rate * DAY
    out["storage"] = storage

    connections: dict[str, Any] = {"trackers": args.trackers}
    if v("rss_kib_per_connection") is not None:
        connections["rss_mib"] = args.trackers * v("rss_kib_per_connection") / 1024
    connections["ingest_processes_at_default_cap"] = math.ceil(args.trackers / args.max_connections)
    out["connections"] = connections

    tracker_app = rows[0]["app_cores"]
    out["plan"] = {
        "ingest_processes": max(processes(tracker_app) or 0, connections["ingest_processes_at_default_cap"]),
        "sync_processes": processes(rows[2]["app_cores"]),
        "api_processes": processes(
            (api_app or 0) + (rows[4]["app_cores"] or 0) if api_app is not None else None
        ),
        "postgres_cores_trackers": rows[0]["postgres_cores"],
        "postgres_cores_pull": rows[2]["postgres_cores"],
        "postgres_cores_api": api_pg,
    }
    out["per_core"] = per_core
    return out


def markdown(result: dict[str, Any], inputs: Inputs) -> str:
    lines = ["## Measured per-core figures", "", "| figure | value | source |", "|---|---:|---|"]
    for key, value in inputs.values.items():
        lines.append(f"| `{key}` | {fmt(value)} | `{inputs.sources[key]}` |")
    if inputs.missing:
        lines += ["", "Missing (re-run the benchmark named): " + ", ".join(f"`{m}`" for m in inputs.missing)]
    lines += ["", "| per core | value |", "|---|---:|"]
    for key, value in result["per_core"].items():
        lines.append(f"| {key.replace('_', ' ')} | {fmt(value)} |")
    load = result["load"]
    lines += [
        "",
        f"## CPU for the load ({load['tracker_records_per_s']:,.0f} tracker records/s, "
        f"{load['measurement_rows_per_s']:,.0f} measurement rows/s)",
        "",
        "| part | load | our processes (cores) | PostgreSQL (cores) | basis |",
        "|---|---|---:|---:|---|",
    ]
    for row in result["cpu"]:
        lines.append(
            f"| {row['part']} | {row['what']} | {fmt(row['app_cores'])} | {fmt(row['postgres_cores'])} "
            f"| {row['note']} |"
        )
    storage = result["storage"]
    lines += [
        "",
        "## Disk (tables + indexes; WAL, backups and replicas come on top)",
        "",
        "| data | per day | at default retention |",
        "|---|---:|---:|",
    ]
    if "positions_gib_per_day" in storage:
        lines.append(
            f"| tracker records: positions (365 d) + raw frames (30 d) | {fmt(storage['positions_gib_per_day'])}"
            f" + {fmt(storage['raw_frames_gib_per_day'])} GiB | "
            f"{fmt(storage['tracker_tib_at_default_retention'])} TiB |"
        )
    if "measurement_gib_per_day" in storage:
        lines.append(
            f"| measurements, 365 d ({storage['measurement_rows_per_day']:,.0f} rows/day) | "
            f"{fmt(storage['measurement_gib_per_day'])} GiB | "
            f"{fmt(storage['measurement_tib_at_default_retention'])} TiB |"
        )
    conn = result["connections"]
    plan = result["plan"]
    lines += [
        "",
        f"## Plan (each process planned at {int(TARGET_UTILISATION * 100)} % of a core)",
        "",
        "| item | value |",
        "|---|---:|",
        f"| tracker connections | {conn['trackers']:,} |",
        f"| ingest RSS for them | {fmt(conn.get('rss_mib'))} MiB |",
        f"| ingest processes (CPU, and INGEST_MAX_CONNECTIONS) | {plan['ingest_processes']} |",
        f"| sync processes | {fmt(plan['sync_processes'])} |",
        f"| API processes | {fmt(plan['api_processes'])} |",
        f"| PostgreSQL cores: trackers / pull / API | {fmt(plan['postgres_cores_trackers'])} / "
        f"{fmt(plan['postgres_cores_pull'])} / {fmt(plan['postgres_cores_api'])} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--trackers", type=int, default=100_000)
    parser.add_argument("--tracker-interval", type=float, default=10.0, help="seconds between records")
    parser.add_argument("--pull-vehicles", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=25)
    parser.add_argument("--pull-hz", type=float, default=1.0)
    parser.add_argument("--api-rps", type=int, default=1_000, help="dashboard-style requests per second")
    parser.add_argument("--live-messages", type=int, default=10_000, help="WebSocket messages per second")
    parser.add_argument("--max-connections", type=int, default=20_000, help="INGEST_MAX_CONNECTIONS")
    parser.add_argument("--position-days", type=int, default=365, help="POSITION_RETENTION_DAYS")
    parser.add_argument("--raw-frame-days", type=int, default=30, help="RAW_FRAME_RETENTION_DAYS")
    parser.add_argument("--measurement-days", type=int, default=365, help="MEASUREMENT_RETENTION_DAYS")
    parser.add_argument("--output", type=Path, default=RESULTS / "capacity.json")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args()
    inputs = read_inputs(args.results)
    result = model(inputs, args)
    result["inputs"] = {k: {"value": inputs.values[k], "source": inputs.sources[k]} for k in inputs.values}
    result["missing"] = inputs.missing
    text = json.dumps(result, indent=2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(text if args.json else markdown(result, inputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
