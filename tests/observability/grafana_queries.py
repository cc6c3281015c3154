"""The dashboards' queries as Grafana would send them: every target and variable, with macros expanded.

Only the macros and variables our dashboards use are expanded; anything else left in a query fails the test
that uses it (a new macro must be taught here first, so nothing runs half-expanded).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
PG_UID = "fleet-postgres"
PROM_UID = "fleet-prometheus"


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # panel title or variable name
    datasource: str
    text: str

    @property
    def uses_vehicle(self) -> bool:
        return "vehicle_id" in self.text


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return data


def dashboards() -> list[str]:
    return sorted(path.name for path in DASHBOARDS.glob("*.json"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def queries(name: str) -> list[Query]:
    """Every query of a dashboard: variables first, then panel targets."""
    board = load(name)
    found = []
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            text = var["query"] if isinstance(var["query"], str) else var["query"].get("query", "")
            found.append(Query(name, f"${var['name']}", var["datasource"]["uid"], text))
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid", "")
            text = target.get("rawSql") if uid == PG_UID else target.get("expr")
            found.append(Query(name, panel["title"], uid, text or ""))
    return found


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def expand_sql(
    text: str, *, login: str, variables: dict[str, str], start: datetime, end: datetime, interval_ms: int
) -> str:
    """Grafana's PostgreSQL macros as documented: `$__timeFrom()` → `'2017-04-21T05:01:17Z'`, etc."""
    sql = text.replace("${__user.login}", login)
    sql = sql.replace("$__timeFrom()", f"'{_iso(start)}'").replace("$__timeTo()", f"'{_iso(end)}'")
    sql = sql.replace("$__interval_ms", str(interval_ms))
    for name, value in variables.items():
        quoted = "'" + value.replace("'", "''") + "'"
        sql = sql.replace(f"${{{name}:sqlstring}}", quoted)
        sql = re.sub(rf"\$\{{{name}\}}|\${name}\b", value, sql)
    if "$" in sql:
        raise AssertionError(f"unexpanded macro or variable in: {sql}")
    return sql
