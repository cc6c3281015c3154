"""Read the running server's `/metrics` and compute what an operator asks: sums, rates, histogram quantiles.

Used by `fleet ops health|monitor|perf|daily`. Two snapshots taken a few seconds apart give rates; one snapshot
gives totals since the process started (counters) or current values (gauges).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fleet.config import Settings


def base_url(settings: Settings, url: str | None = None) -> str:
    """The API's own address (a wildcard bind is reached on loopback)."""
    if url:
        return url.rstrip("/")
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def auth_headers(settings: Settings) -> dict[str, str]:
    if settings.metrics_api_key is not None:
        return {"X-API-Key": settings.metrics_api_key.get_secret_value()}
    return {}


Labels = tuple[tuple[str, str], ...]


@dataclass
class Snapshot:
    """One scrape: sample name → [(labels, value)], and when it was taken."""

    taken: float
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=lambda: defaultdict(list))
    declared: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, text: str, taken: float | None = None) -> Snapshot:
        snap = cls(taken if taken is not None else time.time())
        for family in text_string_to_metric_families(text):
            snap.declared.add(family.name)
            for sample in family.samples:
                snap.samples[sample.name].append((dict(sample.labels), float(sample.value)))
        return snap

    def has(self, name: str) -> bool:
        return name in self.samples

    def series(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        return [
            (labels, value)
            for labels, value in self.samples.get(name, [])
            if all(labels.get(k) == v for k, v in match.items())
        ]

    def total(self, name: str, **match: str) -> float | None:
        found = self.series(name, **match)
        return sum(value for _, value in found) if found else None

    def by(self, name: str, label: str) -> dict[str, float]:
        result: dict[str, float] = defaultdict(float)
        for labels, value in self.samples.get(name, []):
            result[labels.get(label, "")] += value
        return dict(result)


def fetch(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> Snapshot:
    """Scrape `url` + /metrics (raises httpx.HTTPError)."""
    response = httpx.get(f"{url}/metrics", headers=headers or {}, timeout=timeout)
    response.raise_for_status()
    return Snapshot.parse(response.text)


def rate(prev: Snapshot | None, cur: Snapshot, name: str, **match: str) -> float | None:
    """Per-second increase of a counter between two snapshots (a reset counts from zero)."""
    now = cur.total(name, **match)
    if now is None or prev is None:
        return None
    before = prev.total(name, **match) or 0.0
    elapsed = cur.taken - prev.taken
    if elapsed <= 0:
        return None
    delta = now - before if now >= before else now
    return delta / elapsed


def _buckets(snap: Snapshot, name: str, **match: str) -> dict[float, float]:
    counts: dict[float, float] = defaultdict(float)
    for labels, value in snap.series(f"{name}_bucket", **match):
        counts[float(labels["le"])] += value
    return counts


def quantile(q: float, cur: Snapshot, name: str, prev: Snapshot | None = None, **match: str) -> float | None:
    """Prometheus-style `histogram_quantile` over the observations between `prev` and `cur` (or since start)."""
    now = _buckets(cur, name, **match)
    if not now:
        return None
    before = _buckets(prev, name, **match) if prev is not None else {}
    buckets = sorted((le, max(count - before.get(le, 0.0), 0.0)) for le, count in now.items())
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return buckets[-2][0] if len(buckets) > 1 else None
