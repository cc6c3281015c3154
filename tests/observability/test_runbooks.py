"""Every runbook names things that exist: `fleet` commands and their options, `make` targets, API paths,
SQL that PostgreSQL accepts against the real schema, valid PromQL (its metric names are checked against a
live scrape in test_running_server.py). Commands owned by work not merged yet are listed as pending."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import typer.main
import yaml

from fleet.api.app import create_app
from fleet.cli import app as fleet_app

from .runbook_refs import REPO, blocks, promql_expressions, runbooks, shell_commands, sql_statements

# `fleet` subcommands that runbooks use and that another branch builds (name → helper); none left.
PENDING_COMMANDS: dict[str, str] = {}
# Programs of a Debian server the runbooks may name besides `fleet` and `make`.
SYSTEM_TOOLS = {
    "systemctl", "journalctl", "ss", "df", "du", "ls", "curl", "echo", "openssl", "certbot", "wg", "pg_isready",
    "redis-cli", "head",
}  # fmt: skip
EXPECTED = {
    "01-no-frames.md",
    "02-queue-spike.md",
    "03-decode-errors-spike.md",
    "04-db-slow.md",
    "05-api-5xx-spike.md",
    "06-ready-failing.md",
    "07-sync-failing.md",
    "08-disk-filling.md",
    "09-restore-from-backup.md",
    "10-backups-missing.md",
    "11-certificate-expiry.md",
}


def test_the_runbooks_exist_with_symptoms_diagnosis_and_fix() -> None:
    assert {path.name for path in runbooks()} == EXPECTED
    for path in runbooks():
        text = path.read_text()
        headings = set(re.findall(r"^## (.+)$", text, re.M))
        if path.name != "09-restore-from-backup.md":
            assert {"Symptoms", "Diagnose", "Fix", "Verify"} <= headings, path.name
        assert any(b.runbook == path.name and b.language == "bash" for b in blocks()), path.name


def _subcommands(command: Any) -> dict[str, Any] | None:
    """A group's subcommands (None for a plain command); Typer builds on its own copy of Click."""
    found: dict[str, Any] | None = getattr(command, "commands", None)
    return found


def _resolve(args: list[str]) -> tuple[Any, list[str]]:
    """Walk `fleet` subcommands; return the command reached and the words left for it."""
    command: Any = typer.main.get_command(fleet_app)
    words = list(args)
    while _subcommands(command) is not None and words and not words[0].startswith("-"):
        sub = _subcommands(command).get(words[0])  # type: ignore[union-attr]
        if sub is None:
            return None, words
        command, words = sub, words[1:]
    return command, words


def test_every_fleet_command_and_option_exists() -> None:
    checked = 0
    for runbook, command in shell_commands():
        words = shlex.split(command)
        if words[0] != "fleet":
            continue
        if len(words) > 1 and words[1] in PENDING_COMMANDS:
            continue
        target, rest = _resolve(words[1:])
        assert target is not None, f"{runbook}: `{command}` names no fleet command"
        assert _subcommands(target) is None, f"{runbook}: `{command}` is a group, not a command"
        options = {opt for param in target.params for opt in (*param.opts, *param.secondary_opts)}
        for word in rest:
            if word.startswith("-"):
                assert word.split("=")[0] in options, f"{runbook}: `{command}`: no option {word}"
        checked += 1
    assert checked >= 20


def test_pending_commands_are_still_pending() -> None:
    """When `fleet backup` and friends land, their options become checkable: drop them from the list."""
    commands = _subcommands(typer.main.get_command(fleet_app)) or {}
    landed = sorted(name for name in PENDING_COMMANDS if name in commands)
    assert not landed, f"remove from PENDING_COMMANDS, they exist now: {landed}"


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_%-]+):", text, re.M))


def test_every_make_target_and_program_exists() -> None:
    targets = _make_targets()
    for runbook, command in shell_commands():
        words = shlex.split(command)
        program = words[0]
        if program == "make":
            for target in words[1:]:
                found = target in targets or (target.startswith("runbook-") and "runbook-%" in targets)
                assert found, f"{runbook}: no make target {target}"
                if target.startswith("runbook-"):
                    assert any(p.name.endswith(f"-{target[len('runbook-') :]}.md") for p in runbooks())
        elif program != "fleet":
            assert program in SYSTEM_TOOLS, f"{runbook}: unknown program {program!r} in `{command}`"


def _route_patterns() -> list[re.Pattern[str]]:
    paths = create_app().openapi()["paths"]
    return [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$") for path in paths]


def test_every_api_path_exists() -> None:
    patterns = _route_patterns()
    found = 0
    for runbook, command in shell_commands():
        for url in re.findall(r"http://127\.0\.0\.1:8080(/[^\s\"'?]*)", command):
            assert any(p.match(url) for p in patterns), f"{runbook}: no API path {url}"
            found += 1
    assert found >= 5


async def test_every_sql_query_runs_against_the_schema(owner_conn: asyncpg.Connection) -> None:
    statements = sql_statements()
    assert len(statements) >= 10
    for runbook, statement in statements:
        assert statement.lstrip().upper().startswith("SELECT"), f"{runbook}: runbooks only read: {statement}"
        try:
            await owner_conn.execute(f"EXPLAIN {statement}")
        except asyncpg.PostgresError as err:
            raise AssertionError(f"{runbook}: {err}\n{statement}") from err


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (make system-deps)")
def test_every_promql_expression_parses() -> None:
    expressions = promql_expressions()
    assert len(expressions) >= 15
    rules = [{"record": f"runbook:check_{i}", "expr": expr} for i, (_, expr) in enumerate(expressions)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "runbooks.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "runbooks", "rules": rules}]}))
        result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
