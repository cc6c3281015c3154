"""Which metric names the alert rules, dashboards and runbooks use, and which of them are not ours yet.

`PENDING` lists names that other branches define (INTERFACES.md §5) and that are not on this branch: the
rules and dashboards are written against them already. The existence test fails when a pending name shows up
in the scrape, so the list is shortened as soon as that work lands.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .grafana_queries import PROM_UID, dashboards, queries

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules"

# name → the helper (branch) that defines it
PENDING: dict[str, str] = {
    "fleet_ws_viewers": "live",
    "fleet_ws_messages_total": "live",
    "fleet_ws_dropped_total": "live",
    "fleet_ws_rejected_total": "live",
}
# Counters that only get a sample when something fails (a batch commit, a statement, a refused connection
# under UNKNOWN_DEVICE_POLICY=reject or the connection limit); the scrape must still declare them (# TYPE).
FAILURE_ONLY = {
    "fleet_ingest_batch_failures_total",
    "fleet_db_query_errors_total",
    "fleet_ingest_connections_refused_total",
}
# Prometheus's own series, not the server's.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "inf", "nan", "le",
}  # fmt: skip
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def promql_names(expr: str) -> set[str]:
    """Metric and recording-rule names in a PromQL expression (functions, labels and keywords dropped)."""
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", " ", expr)  # Grafana variables ($__rate_interval)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', " ", text)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def rule_documents() -> list[dict[str, object]]:
    return [yaml.safe_load(path.read_text()) for path in sorted(RULES.glob("*.yml"))]


def rules() -> list[dict[str, object]]:
    return [rule for doc in rule_documents() for group in doc["groups"] for rule in group["rules"]]  # type: ignore[index]


def recorded_names() -> set[str]:
    return {str(rule["record"]) for rule in rules() if "record" in rule}


def rule_exprs() -> list[tuple[str, str]]:
    return [(str(rule.get("alert") or rule.get("record")), str(rule["expr"])) for rule in rules()]


def dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (f"{q.dashboard} / {q.where}", q.text)
        for name in dashboards()
        for q in queries(name)
        if q.datasource == PROM_UID
    ]


def base_name(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
