"""What every benchmark shares: machine description, statistics and the result writer.

Each benchmark builds one :class:`BenchReport`, adds its parameters, raw samples, baselines, ratios and
targets, and calls :meth:`BenchReport.write`, which stores two copies of the same JSON document:

* ``bench/results/<name>-<UTC timestamp>.json`` - this run (git-ignored: a local history);
* ``bench/results/<name>.json`` - the latest run (committed; docs/PERFORMANCE.md quotes it).

A ``--quick`` run (``make bench-quick``, a CI smoke test) writes ``<name>-quick…`` files instead, so that a
smoke run never replaces the figures of a full run, and its targets are recorded but never enforced.

Usage from a script in bench/ (the scripts put the repository root on ``sys.path``)::

    from bench.common import BenchReport, add_quick_argument

    report = BenchReport("codec", quick=args.quick, parameters={"records": 20000})
    report.add_samples("flex20_decode_records_per_s", rates)       # raw samples -> median, spread
    report.add_baseline("flex20_iter_unpack_records_per_s", base)  # measured in the same run
    report.add_ratio("flex20_decode_to_iter_unpack", median, base)
    report.add_target("flex20_decode_records_per_s", median, 200_000)  # higher is better by default
    report.results = {...}                                         # anything else the benchmark reports
    report.set_postgres_version(dsn)                               # when a database took part
    report.write()

The document's keys: ``benchmark``, ``mode``, ``started_at``, ``finished_at``, ``machine`` (CPU model,
cores, RAM, kernel, Python, PostgreSQL server version, load average before and after, busy processes at the
start), ``git`` (commit, dirty), ``parameters``, ``samples`` (raw), ``stats`` (median and spread of each
sample list), ``baselines``, ``ratios``, ``targets`` and ``results``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
SCHEMA_VERSION = 1

# --- statistics ---------------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float | None:
    """Return the median of ``values`` (None when empty)."""
    data = list(values)
    return float(statistics.median(data)) if data else None


def percentile(values: Iterable[float], p: float) -> float | None:
    """Return the ``p``-th percentile (0-100) with linear interpolation between ranks (None when empty)."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * p / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return float(data[low] + (data[high] - data[low]) * (rank - low))


def spread(values: Iterable[float], digits: int = 3) -> dict[str, Any]:
    """Return n, min, p10, median, p90, p99, max, mean, stdev and relative spread of ``values``.

    ``relative_spread`` is (max - min) / median: how far apart the runs were, the figure to quote next to a
    median measured on a shared machine.
    """
    data = [float(v) for v in values]
    if not data:
        return {"n": 0}
    mid = statistics.median(data)

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {
        "n": len(data),
        "min": r(min(data)),
        "p10": r(percentile(data, 10)),
        "median": r(mid),
        "p90": r(percentile(data, 90)),
        "p99": r(percentile(data, 99)),
        "max": r(max(data)),
        "mean": r(statistics.fmean(data)),
        "stdev": r(statistics.stdev(data)) if len(data) > 1 else 0.0,
        "relative_spread": r((max(data) - min(data)) / mid) if mid else None,
    }


def ratio(value: float | None, baseline: float | None, digits: int = 3) -> float | None:
    """Return value / baseline rounded (None when either is missing or the baseline is zero)."""
    if value is None or not baseline:
        return None
    return round(value / baseline, digits)


# --- machine ------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo (Linux) or platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    """Return the machine's RAM in GiB (None off Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def git_info() -> dict[str, Any]:
    """Return the commit the benchmark ran from and whether the tree had local changes."""

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "branch": run("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def ticks_by_pid() -> dict[int, tuple[int, int, str]]:
    """pid -> (utime + stime clock ticks, parent pid, command line) of every process (from /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry)] = (int(fields[11]) + int(fields[12]), int(fields[1]), command.strip())
    return out


def process_ticks(pids: set[int]) -> dict[int, int]:
    """pid -> utime + stime clock ticks of each of ``pids`` still running (from /proc)."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = int(fields[11]) + int(fields[12])
    return out


def busy_processes(window_s: float = 0.5, limit: int = 5) -> list[str]:
    """Return the processes that used CPU during ``window_s`` (a shared machine skews every figure)."""
    if not Path("/proc/self/stat").exists():
        return []
    first = ticks_by_pid()
    time.sleep(window_s)
    second = ticks_by_pid()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (ticks, _parent, command) in second.items():
        used = (ticks - first.get(pid, (ticks, 0, ""))[0]) / hz / window_s
        if used > 0.05 and pid != os.getpid():
            busy.append((used, f"{used * 100:.0f}% {command[:80]}"))
    return [text for _, text in sorted(busy, reverse=True)[:limit]]


def machine_info() -> dict[str, Any]:
    """Return the static description of the machine and interpreter."""
    versions = {}
    for module in ("uvloop", "asyncpg", "orjson"):
        try:
            versions[module] = getattr(__import__(module), "__version__", None)
        except ImportError:
            versions[module] = None
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        **versions,
    }


async def postgres_version_async(dsn: str) -> str:
    """Return the ``server_version`` of the PostgreSQL behind ``dsn``."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def postgres_version(dsn: str) -> str:
    """Return the ``server_version`` of the PostgreSQL behind ``dsn`` (from synchronous code)."""
    return asyncio.run(postgres_version_async(dsn))


def utc_stamp(moment: datetime | None = None) -> str:
    """Return a file-name-safe UTC timestamp such as 20261205T034500Z."""
    return (moment or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


# --- report -------------------------------------------------------------------------------------------------


def add_quick_argument(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--quick`` flag (small sizes, targets not enforced)."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small sizes, a few seconds; results go to <name>-quick*.json, targets not enforced",
    )


class BenchReport:
    """One benchmark run: collects what it measured and writes the JSON result files."""

    def __init__(
        self,
        name: str,
        *,
        quick: bool = False,
        parameters: dict[str, Any] | None = None,
        results_dir: Path | None = None,
        watch_busy: bool = True,
    ) -> None:
        self.name = name
        self.quick = quick
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.results_dir = results_dir or RESULTS_DIR
        self.started = datetime.now(UTC)
        self._started_monotonic = time.monotonic()
        self.machine = machine_info()
        self.machine["load_average_before"] = load_average()
        self.machine["busy_processes_before"] = busy_processes() if watch_busy else []
        self.machine["postgres_version"] = None
        self.samples: dict[str, list[float]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.baselines: dict[str, Any] = {}
        self.ratios: dict[str, float | None] = {}
        self.targets: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []

    # What a benchmark adds.

    def set_postgres_version(self, dsn_or_version: str) -> None:
        """Record the PostgreSQL server version (pass a DSN to ask the server, or the version itself)."""
        if "://" in dsn_or_version or "=" in dsn_or_version:
            self.machine["postgres_version"] = postgres_version(dsn_or_version)
        else:
            self.machine["postgres_version"] = dsn_or_version

    def add_samples(self, key: str, values: Sequence[float], digits: int = 3) -> dict[str, Any]:
        """Store raw samples under ``key`` and their median and spread; return the spread."""
        self.samples[key] = [round(float(v), 6) for v in values]
        self.stats[key] = spread(values, digits)
        return self.stats[key]

    def add_baseline(self, key: str, value: Any) -> None:
        """Store a baseline measured in the same run (e.g. raw COPY rows/s, struct.iter_unpack records/s)."""
        self.baselines[key] = value

    def add_ratio(self, key: str, value: float | None, baseline: float | None) -> float | None:
        """Store value / baseline under ``key``; return it."""
        self.ratios[key] = ratio(value, baseline)
        return self.ratios[key]

    def add_target(
        self, key: str, value: float | None, target: float, *, higher_is_better: bool = True, unit: str = ""
    ) -> bool | None:
        """Record a target and whether ``value`` meets it (None when nothing was measured)."""
        met = None if value is None else (value >= target if higher_is_better else value <= target)
        self.targets[key] = {
            "value": value,
            "target": target,
            "comparison": ">=" if higher_is_better else "<=",
            "unit": unit,
            "met": met,
        }
        return met

    def note(self, text: str) -> None:
        """Add a free-text remark (what limited a figure, what was left out)."""
        self.notes.append(text)

    # Output.

    def document(self) -> dict[str, Any]:
        """Return the JSON document of this run (the load average after is read now)."""
        machine = dict(self.machine)
        machine["load_average_after"] = load_average()
        return {
            "benchmark": self.name,
            "schema": SCHEMA_VERSION,
            "mode": "quick" if self.quick else "full",
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.monotonic() - self._started_monotonic, 1),
            "machine": machine,
            "git": git_info(),
            "parameters": self.parameters,
            "stats": self.stats,
            "baselines": self.baselines,
            "ratios": self.ratios,
            "targets": {**self.targets, "enforced": not self.quick} if self.targets else {},
            "results": self.results,
            "notes": self.notes,
            "samples": self.samples,
        }

    def stem(self) -> str:
        """Return the file name stem: ``<name>`` or ``<name>-quick``."""
        return f"{self.name}-quick" if self.quick else self.name

    def write(self, echo: bool = True) -> tuple[Path, Path]:
        """Write ``<stem>-<UTC timestamp>.json`` and ``<stem>.json``; return both paths."""
        document = self.document()
        text = json.dumps(document, indent=2, default=str) + "\n"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        stamped = self.results_dir / f"{self.stem()}-{utc_stamp(self.started)}.json"
        latest = self.results_dir / f"{self.stem()}.json"
        for path in (stamped, latest):
            partial = path.with_suffix(".json.tmp")
            partial.write_text(text)
            partial.replace(path)
        if echo:  # on stderr: stdout carries the benchmark's own JSON
            where = stamped.relative_to(ROOT) if stamped.is_relative_to(ROOT) else stamped
            print(
                f"{self.name}: wrote {where}; load average before {machine_load(document, 'before')}, "
                f"after {machine_load(document, 'after')}",
                file=sys.stderr,
            )
        return stamped, latest

    def targets_met(self) -> bool:
        """Return True when every recorded target with a value was met (quick runs: always True)."""
        if self.quick:
            return True
        return all(t["met"] is not False for t in self.targets.values())


def machine_load(document: dict[str, Any], when: str) -> list[float] | None:
    """Return the load average before/after recorded in a result document."""
    value = document.get("machine", {}).get(f"load_average_{when}")
    return list(value) if value is not None else None


def load_result(name: str, results_dir: Path | None = None) -> dict[str, Any] | None:
    """Return the latest stored result document of ``name`` (None when it was never run)."""
    path = (results_dir or RESULTS_DIR) / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


if __name__ == "__main__":  # a quick look at what a result would record about this machine
    print(json.dumps({**machine_info(), "load_average": load_average(), "git": git_info()}, indent=2))
    sys.exit(0)
