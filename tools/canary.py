#!/usr/bin/env python3
"""Canary rollouts behind nginx: compare canary and stable from their metrics, move traffic, roll back.

    python tools/canary.py status              # error rate, p95 latency, decode errors, failing jobs
    python tools/canary.py promote             # next step of 0 → 5 → 25 → 50 → 100 %, only if healthy
    python tools/canary.py rollback            # 0 %, at once, no questions
    python tools/canary.py set-weight 25       # any share

(`make canary-status|canary-promote|canary-rollback`.) Both instances are scraped twice, `--window` seconds
apart, so rates describe the same recent minute on both sides (`--window 0`: totals since each started).
The share lives in two files nginx includes (deploy/canary/): `canary-split.conf` (API, split by client
address and user agent) and `canary-stream-split.conf` (device ports, split by tracker address); after
rewriting them the tool runs `--reload` (default `nginx -t && nginx -s reload`).

Exit codes: 0 healthy (or done), 1 the canary is worse than stable (promote refused), 2 not enough traffic
to judge, 3 a metrics endpoint could not be read.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

LADDER = (0, 5, 25, 50, 100)
HTTP_SPLIT = "canary-split.conf"
STREAM_SPLIT = "canary-stream-split.conf"
DEVICE_PROTOCOLS = ("navtelecom", "teltonika")


@dataclass
class Sample:
    """What one scrape says (counters are totals since the instance started)."""

    requests: float = 0.0
    errors: float = 0.0  # 5xx answers
    buckets: dict[float, float] | None = None  # le → cumulative count, summed over routes
    frames: float = 0.0
    decode_errors: float = 0.0
    failing_jobs: float = 0.0

    def minus(self, earlier: Sample) -> Sample:
        buckets = None
        if self.buckets is not None:
            before = earlier.buckets or {}
            buckets = {le: count - before.get(le, 0.0) for le, count in self.buckets.items()}
        return Sample(
            requests=self.requests - earlier.requests,
            errors=self.errors - earlier.errors,
            buckets=buckets,
            frames=self.frames - earlier.frames,
            decode_errors=self.decode_errors - earlier.decode_errors,
            failing_jobs=self.failing_jobs,  # a gauge: the current value
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def decode_error_rate(self) -> float:
        return self.decode_errors / self.frames if self.frames else 0.0

    def quantile(self, q: float) -> float | None:
        """The q-quantile of request duration, interpolated inside the bucket (as histogram_quantile does)."""
        if not self.buckets:
            return None
        bounds = sorted(self.buckets)
        total = self.buckets[bounds[-1]]
        if total <= 0:
            return None
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for le in bounds:
            count = self.buckets[le]
            if count >= rank:
                if le == float("inf"):
                    return lower_bound
                span = count - lower_count
                return lower_bound + (le - lower_bound) * ((rank - lower_count) / span if span else 1.0)
            lower_bound, lower_count = le, count
        return bounds[-1]


def parse_metrics(text: str) -> Sample:
    """Sum the app's metrics over labels (route, method, type, reason, job)."""
    sample = Sample(buckets=defaultdict(float))
    assert sample.buckets is not None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "fleet_http_requests_total":
                sample.requests += s.value
                if str(s.labels.get("status", "")).startswith("5"):
                    sample.errors += s.value
            elif s.name == "fleet_http_request_duration_seconds_bucket":
                sample.buckets[float(s.labels["le"])] += s.value
            elif s.name == "fleet_ingest_frames_total":
                sample.frames += s.value
            elif s.name == "fleet_ingest_decode_errors_total":
                sample.decode_errors += s.value
            elif s.name == "fleet_job_failing":
                sample.failing_jobs += s.value
    sample.buckets = dict(sample.buckets)
    return sample


def scrape(url: str, timeout: float = 10.0) -> Sample:
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    api_key = os.environ.get("METRICS_API_KEY")
    if api_key:
        request.add_header("X-API-Key", api_key)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return parse_metrics(response.read().decode())


@dataclass
class Thresholds:
    max_error_delta: float = 0.01  # canary error rate may exceed stable's by 1 percentage point
    max_latency_ratio: float = 1.5  # canary p95 may be 1.5× stable's ...
    latency_slack_s: float = 0.05  # ... plus 50 ms (fast routes jitter)
    min_requests: float = 50  # fewer canary requests than this: no verdict


def judge(stable: Sample, canary: Sample, limits: Thresholds) -> tuple[int, list[str]]:
    """(exit code, reasons): 0 healthy, 1 worse than stable, 2 not enough traffic."""
    problems = []
    if canary.error_rate > stable.error_rate + limits.max_error_delta:
        problems.append(f"error rate {canary.error_rate:.2%} vs stable {stable.error_rate:.2%}")
    s95, c95 = stable.quantile(0.95), canary.quantile(0.95)
    if s95 is not None and c95 is not None and c95 > s95 * limits.max_latency_ratio + limits.latency_slack_s:
        problems.append(f"p95 latency {c95 * 1000:.0f} ms vs stable {s95 * 1000:.0f} ms")
    if canary.decode_error_rate > stable.decode_error_rate + limits.max_error_delta:
        problems.append(
            f"decode errors {canary.decode_error_rate:.2%} of frames vs stable {stable.decode_error_rate:.2%}"
        )
    if canary.failing_jobs > 0:
        problems.append(f"{canary.failing_jobs:.0f} background job(s) failing on the canary")
    if problems:
        return 1, problems
    if canary.requests < limits.min_requests and canary.frames < limits.min_requests:
        return 2, [f"only {canary.requests:.0f} requests and {canary.frames:.0f} frames reached the canary"]
    return 0, ["canary is as healthy as stable"]


def observe(stable_url: str, canary_url: str, window: float) -> tuple[Sample, Sample]:
    first = (scrape(stable_url), scrape(canary_url))
    if window <= 0:
        return first
    time.sleep(window)
    return scrape(stable_url).minus(first[0]), scrape(canary_url).minus(first[1])


def report(stable: Sample, canary: Sample) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f} ms"

    rows = [
        ("", "stable", "canary"),
        ("requests", f"{stable.requests:.0f}", f"{canary.requests:.0f}"),
        ("5xx rate", f"{stable.error_rate:.2%}", f"{canary.error_rate:.2%}"),
        ("p50 latency", ms(stable.quantile(0.5)), ms(canary.quantile(0.5))),
        ("p95 latency", ms(stable.quantile(0.95)), ms(canary.quantile(0.95))),
        ("device frames", f"{stable.frames:.0f}", f"{canary.frames:.0f}"),
        ("decode errors", f"{stable.decode_error_rate:.2%}", f"{canary.decode_error_rate:.2%}"),
        ("failing jobs", f"{stable.failing_jobs:.0f}", f"{canary.failing_jobs:.0f}"),
    ]
    return "\n".join(f"{a:<15}{b:>14}{c:>14}" for a, b, c in rows)


# --- the split files ------------------------------------------------------------------------------------------
def _split(variable: str, key: str, prefix: str, weight: float) -> str:
    if weight >= 100:
        body = f"    * {prefix}_canary;"
    elif weight <= 0:
        body = f"    * {prefix}_stable;"
    else:
        body = f"    {weight:g}% {prefix}_canary;\n    * {prefix}_stable;"
    return f'split_clients "{key}" ${variable} {{\n{body}\n}}\n'


def write_weight(directory: Path, weight: float) -> None:
    header = f"# written by tools/canary.py: canary weight {weight:g}%\n"
    http = header + _split("fleet_backend", "${remote_addr}${http_user_agent}", "fleet", weight)
    stream = header + "".join(_split(f"fleet_{p}", "$remote_addr", p, weight) for p in DEVICE_PROTOCOLS)
    for name, text in ((HTTP_SPLIT, http), (STREAM_SPLIT, stream)):
        tmp = directory / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(directory / name)


def read_weight(directory: Path) -> float:
    text = (directory / HTTP_SPLIT).read_text()
    if re.search(r"^\s*\*\s+fleet_canary;", text, flags=re.M):
        return 100.0
    match = re.search(r"([\d.]+)%\s+fleet_canary;", text)
    return float(match.group(1)) if match else 0.0


def apply_weight(directory: Path, weight: float, reload_cmd: str) -> None:
    previous = read_weight(directory)
    write_weight(directory, weight)
    result = subprocess.run(reload_cmd, shell=True, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        write_weight(directory, previous)  # nginx refused: keep what it runs with
        raise SystemExit(
            f"reload failed, weight stays {previous:g}%: {result.stderr.strip() or result.stdout.strip()}"
        )
    print(f"canary weight {previous:g}% → {weight:g}%")


def next_step(weight: float) -> float:
    return next((step for step in LADDER if step > weight), 100.0)


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split-dir", type=Path, default=Path(env("CANARY_SPLIT_DIR", "/etc/nginx/fleet")))
    parser.add_argument("--stable", default=env("CANARY_STABLE_METRICS", "http://127.0.0.1:8080/metrics"))
    parser.add_argument("--canary", default=env("CANARY_METRICS", "http://127.0.0.1:8081/metrics"))
    parser.add_argument("--window", type=float, default=float(env("CANARY_WINDOW_SEC", "60")))
    parser.add_argument("--reload", default=env("CANARY_RELOAD_CMD", "nginx -t && nginx -s reload"))
    parser.add_argument("--min-requests", type=float, default=float(env("CANARY_MIN_REQUESTS", "50")))
    parser.add_argument("--force", action="store_true", help="promote without a healthy verdict")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status")
    sub.add_parser("promote")
    sub.add_parser("rollback")
    weight_cmd = sub.add_parser("set-weight")
    weight_cmd.add_argument("weight", type=float)
    args = parser.parse_args(argv)

    if args.command == "rollback":
        apply_weight(args.split_dir, 0, args.reload)
        return 0
    if args.command == "set-weight":
        if not 0 <= args.weight <= 100:
            parser.error("weight is a percentage: 0..100")
        apply_weight(args.split_dir, args.weight, args.reload)
        return 0
    try:
        stable, canary = observe(args.stable, args.canary, args.window)
    except OSError as err:
        print(f"cannot read metrics: {err}", file=sys.stderr)
        return 3
    code, reasons = judge(stable, canary, Thresholds(min_requests=args.min_requests))
    weight = read_weight(args.split_dir)
    print(f"canary weight {weight:g}%, window {args.window:g} s\n{report(stable, canary)}")
    print(("OK: " if code == 0 else "NOT OK: " if code == 1 else "NO VERDICT: ") + "; ".join(reasons))
    if args.command == "status":
        return code
    if code != 0 and not args.force:
        print("promote refused (use --force to override, or make canary-rollback)", file=sys.stderr)
        return code
    if weight >= 100:
        print("the canary already takes all traffic: deploy its version as stable, then set-weight 0")
        return 0
    apply_weight(args.split_dir, next_step(weight), args.reload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
