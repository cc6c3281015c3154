"""The monitoring configuration as the real tools read it: `promtool check config`, `promtool test rules`,
`amtool check-config`; every alert names an existing runbook and is exercised by a unit test; the dashboards
are valid JSON whose PromQL parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from .grafana_queries import DASHBOARDS, PG_UID, PROM_UID, dashboards, queries
from .metric_names import dashboard_exprs, rules

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make system-deps)")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=PROM_DIR)


@needs_promtool
def test_promtool_accepts_the_config_and_rules() -> None:
    assert PROMTOOL is not None
    result = _run(PROMTOOL, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rule files found" in result.stdout


@needs_promtool
def test_promtool_accepts_the_compose_config(tmp_path: Path) -> None:
    """deploy/prometheus/compose.yml: the same rules, the app on the compose network with a bearer key."""
    assert PROMTOOL is not None
    shutil.copytree(PROM_DIR, tmp_path / "prometheus")
    config = tmp_path / "prometheus" / "compose.yml"
    (tmp_path / "prometheus" / "metrics_api_key").write_text("scrape-key-0123456789")
    text = config.read_text()
    assert "/etc/prometheus/metrics_api_key" in text
    config.write_text(
        text.replace("/etc/prometheus/metrics_api_key", str(tmp_path / "prometheus" / "metrics_api_key"))
    )
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rule files found" in result.stdout
    parsed = yaml.safe_load(text)
    (fleet_job,) = [job for job in parsed["scrape_configs"] if job["job_name"] == "fleet"]
    assert fleet_job["static_configs"][0]["targets"] == ["app:8080"]
    assert parsed["rule_files"] == yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())["rule_files"]


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    assert PROMTOOL is not None
    tests = sorted(str(p.relative_to(PROM_DIR)) for p in (PROM_DIR / "tests").glob("*.test.yml"))
    result = _run(PROMTOOL, "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


@pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed (make system-deps)")
def test_amtool_accepts_the_alertmanager_example() -> None:
    assert AMTOOL is not None
    result = _run(AMTOOL, "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    text = (PROM_DIR / "alertmanager.yml").read_text()
    assert "telegram_configs" in text and "email_configs" in text


def test_every_alert_has_severity_and_an_existing_runbook() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) >= 25
    runbooks = {path.name for path in (REPO / "runbooks").glob("*.md")}
    for rule in alerts:
        assert rule["labels"]["severity"] in ("page", "warning", "ticket"), rule["alert"]  # type: ignore[index]
        annotations = rule["annotations"]
        assert isinstance(annotations, dict) and annotations.get("summary"), rule["alert"]
        url = annotations.get("runbook_url", "")
        assert re.fullmatch(r"https://[^/]+/runbooks/\d\d-[a-z0-9-]+\.md", url), rule["alert"]
        assert url.rsplit("/", 1)[1] in runbooks, f"{rule['alert']}: {url}"


def test_the_seed_alerts_exist() -> None:
    names = {str(rule.get("alert")) for rule in rules()}
    for name in (
        "FleetNoFrames",  # no frames from devices
        "FleetWriterQueueSpike",  # queue spike
        "FleetIngestBackpressure",  # backpressure
        "FleetDecodeErrorsSpike",  # decode-error spike
        "FleetDatabaseSlow",  # slow database
        "FleetApi5xxSpike",  # API 5xx
        "FleetSyncFailing",  # sync failing
        "FleetDiskFilling",  # disk filling
        "FleetBackupMissing",  # backups missing
        "FleetCertificateExpiringSoon",  # certificate expiry
    ):
        assert name in names
    burn = [n for n in names if "BudgetBurn" in n]
    assert len(burn) == 10  # five SLIs, a fast and a slow burn each


def test_every_alert_is_unit_tested_firing() -> None:
    tested: set[str] = set()
    for path in (PROM_DIR / "tests").glob("*.test.yml"):
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    tested.add(case["alertname"])
    untested = sorted(
        str(rule["alert"]) for rule in rules() if "alert" in rule and rule["alert"] not in tested
    )
    # The slow burns of the sub-second SLIs share their expression shape with the tested ones.
    allowed = {
        "FleetIngestFrameErrorsBudgetBurnFast",
        "FleetIngestFrameErrorsBudgetBurnSlow",
        "FleetIngestAckSlowBudgetBurnSlow",
        "FleetApiErrorsBudgetBurnSlow",
        "FleetApiSlowBudgetBurnFast",
        "FleetApiSlowBudgetBurnSlow",
        "FleetSyncFailuresBudgetBurnFast",
    }
    assert set(untested) <= allowed, untested


def test_dashboards_are_valid_and_reference_the_provisioned_datasources() -> None:
    names = dashboards()
    assert set(names) == {"vehicle-telemetry.json", "fleet-overview.json", "server-operations.json"}
    uids = set()
    for name in names:
        board = json.loads((DASHBOARDS / name).read_text())
        assert board["uid"] not in uids and board["title"] and board["editable"] is False
        uids.add(board["uid"])
        found = queries(name)
        assert found, name
        for query in found:
            assert query.datasource in (PG_UID, PROM_UID), f"{name} / {query.where}"
            assert query.text.strip(), f"{name} / {query.where}: empty query"
            if query.datasource == PG_UID:
                # Data only through the access-checking functions, always for the signed-in login.
                assert "grafana." in query.text and "'${__user.login}'" in query.text, (
                    f"{name} / {query.where}"
                )
    provisioning = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/fleet.yml").read_text())
    provisioned = {source["uid"]: source for source in provisioning["datasources"]}
    assert provisioned[PG_UID]["user"] == "fleet_grafana"
    assert set(provisioned) == {PG_UID, PROM_UID}


@needs_promtool
def test_dashboard_promql_parses() -> None:
    assert PROMTOOL is not None
    exprs = dashboard_exprs()
    assert len(exprs) >= 30
    records = [
        {"record": f"dashboard:check_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, expr) in enumerate(exprs)
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dashboards.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": records}]}))
        result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
