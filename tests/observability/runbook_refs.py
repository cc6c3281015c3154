"""What the runbooks name: shell commands, SQL, PromQL and metric names (read from their code)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "runbooks"
_BLOCK = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)
_INLINE_METRIC = re.compile(r"`((?:fleet|http|database)_[a-z0-9_]+|users_total|active_users)(?:\{[^`]*\})?`")


@dataclass(frozen=True)
class Block:
    runbook: str
    language: str
    text: str


def runbooks() -> list[Path]:
    return sorted(RUNBOOKS.glob("[0-9][0-9]-*.md"))


def blocks() -> list[Block]:
    found = []
    for path in runbooks():
        for match in _BLOCK.finditer(path.read_text()):
            indent = len(match.group(1))
            text = "\n".join(line[indent:] for line in match.group(3).splitlines())
            found.append(Block(path.name, match.group(2), text))
    return found


def shell_commands() -> list[tuple[str, str]]:
    """(runbook, command) for every command of every bash block, pipelines and `&&` chains split."""
    found = []
    for block in blocks():
        if block.language != "bash":
            continue
        for line in block.text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"\s*(?:\|\||&&|\||;)\s*", line):
                if part:
                    found.append((block.runbook, part))
    return found


def sql_statements() -> list[tuple[str, str]]:
    found = []
    for block in blocks():
        if block.language == "sql":
            for statement in block.text.split(";"):
                if statement.strip():
                    found.append((block.runbook, statement.strip()))
    return found


def promql_expressions() -> list[tuple[str, str]]:
    return [
        (block.runbook, line.strip())
        for block in blocks()
        if block.language == "promql"
        for line in block.text.splitlines()
        if line.strip()
    ]


def runbook_metric_names() -> list[str]:
    """PromQL expressions and backticked metric names of every runbook (each an expression to scan)."""
    names = [expr for _, expr in promql_expressions()]
    for path in runbooks():
        names += _INLINE_METRIC.findall(path.read_text())
    return names
