"""docker-compose.yml binds exactly as seed 001 says; the Dockerfile is slim, non-root, health-checked.

(No Docker daemon runs on the test machines, so the image is not built here: these checks read the files.)
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

# The only ports open to the world: nginx's HTTP(S) and the trackers' TCP ports (seed 001's table, plus
# the device ports that trackers must reach). Everything else is published on 127.0.0.1 or not at all.
PUBLIC: dict[str, set[tuple[int, str]]] = {
    "nginx": {(80, "tcp"), (443, "tcp")},
    "app": {(5221, "tcp"), (5027, "tcp")},
}
LOOPBACK = {"127.0.0.1", "::1"}


def parse_port(entry: Any) -> tuple[str | None, int | None, int, str]:
    """(host_ip, published, target, protocol) of a compose `ports:` entry, short or long syntax."""
    if isinstance(entry, dict):
        published = entry.get("published")
        return (
            entry.get("host_ip"),
            int(published) if published is not None else None,
            int(entry["target"]),
            entry.get("protocol", "tcp"),
        )
    text = str(entry)
    protocol = "tcp"
    if "/" in text:
        text, protocol = text.rsplit("/", 1)
    if text.startswith("["):  # [::1]:8080:8080
        host, rest = text[1:].split("]:", 1)
        published, target = rest.split(":")
        return host, int(published), int(target), protocol
    parts = text.split(":")
    if len(parts) == 3:
        return parts[0], int(parts[1]), int(parts[2]), protocol
    if len(parts) == 2:
        return None, int(parts[0]), int(parts[1]), protocol
    return None, None, int(parts[0]), protocol


def binding_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in compose.get("services", {}).items():
        if service.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host publishes every port it opens")
        for entry in service.get("ports", []) or []:
            host_ip, published, _target, protocol = parse_port(entry)
            if published is None:
                problems.append(f"{name}: {entry!r} publishes on a random public port")
                continue
            if host_ip in LOOPBACK:
                continue
            if (published, protocol) in PUBLIC.get(name, set()) and host_ip in (None, "0.0.0.0", "::"):
                continue
            problems.append(f"{name}: {entry!r} is reachable from outside (bind it to 127.0.0.1)")
    return problems


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def test_every_binding_follows_the_seed_table(compose: dict[str, Any]) -> None:
    assert binding_problems(compose) == []
    published = {
        name: {parse_port(p)[:2] for p in service.get("ports", [])}
        for name, service in compose["services"].items()
    }
    assert published["nginx"] == {(None, 80), (None, 443)}
    assert published["postgres"] == {("127.0.0.1", 5432)}
    assert published["grafana"] == {("127.0.0.1", 3000)}
    assert ("127.0.0.1", 8080) in published["app"]
    assert {(None, 5221), (None, 5027)} <= published["app"]
    assert set(compose["services"]) >= {"app", "postgres", "redis", "grafana", "prometheus", "nginx"}


@pytest.mark.parametrize(
    "bad",
    [
        "5432:5432",
        "0.0.0.0:3000:3000",
        "8080",
        "[::]:6379:6379",
        {"target": 9090, "published": 9090},
        {"target": 9090, "published": 9090, "host_ip": "0.0.0.0"},
    ],
)
def test_the_check_fails_on_any_other_binding(compose: dict[str, Any], bad: Any) -> None:
    mutated = yaml.safe_load(yaml.safe_dump(compose))
    mutated["services"]["postgres"]["ports"] = [bad]
    assert binding_problems(mutated), bad
    hosted = yaml.safe_load(yaml.safe_dump(compose))
    hosted["services"]["redis"]["network_mode"] = "host"
    assert binding_problems(hosted)


def test_the_app_trusts_exactly_the_nginx_container(compose: dict[str, Any]) -> None:
    nginx_ip = compose["services"]["nginx"]["networks"]["fleet"]["ipv4_address"]
    app_env = compose["services"]["app"]["environment"]
    assert app_env["TRUSTED_PROXIES"] == nginx_ip
    subnet = ipaddress.ip_network(compose["networks"]["fleet"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(nginx_ip) in subnet
    assert compose["services"]["grafana"]["environment"]["GF_AUTH_PROXY_WHITELIST"] == nginx_ip
    assert app_env["ENV"] == "production"


def test_env_example_names_real_settings() -> None:
    from fleet.config import Settings

    known = {name.upper() for name in Settings.model_fields}
    # Read by compose itself or by components not in this branch (TELTONIKA_PORT: the Teltonika listener).
    compose_only = {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "FLEET_DOMAIN", "TELTONIKA_PORT"}
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (DEPLOY / ".env.example").read_text(), flags=re.M)
    unknown = sorted(set(names) - known - compose_only)
    assert unknown == []


def test_dockerfile_is_slim_non_root_and_health_checked() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    froms = [line for line in lines if line.startswith("FROM")]
    assert froms and all("-slim" in line for line in froms)
    final = lines[lines.index(froms[-1]) :]
    users = [line.split()[1] for line in final if line.startswith("USER")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    [health] = [line for line in final if line.startswith("HEALTHCHECK")]
    assert '"fleet", "check"' in health
    assert any(line.startswith("ENTRYPOINT") and "fleet" in line for line in final)


def test_grafana_runs_with_the_shipped_auth_proxy_setup(compose: dict[str, Any]) -> None:
    """Grafana under compose gets grafana.ini, the provisioning and the dashboards where the provider looks,
    every variable the datasources read, and nginx reaches it by the same upstream name as on one host."""
    grafana = compose["services"]["grafana"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts["/etc/grafana/grafana.ini"] == "./grafana/grafana.ini"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "fleet.yml").read_text())
    assert mounts[provider["providers"][0]["options"]["path"]] == "./grafana/dashboards"
    datasources = (DEPLOY / "grafana" / "provisioning" / "datasources" / "fleet.yml").read_text()
    wanted = set(re.findall(r"\$\{(FLEET_[A-Z_]+)\}", datasources))
    assert wanted and wanted <= set(grafana["environment"])
    assert (
        grafana["environment"]["GF_AUTH_PROXY_WHITELIST"]
        == compose["services"]["nginx"]["networks"]["fleet"]["ipv4_address"]
    )
    assert "grafana" in compose["services"]["nginx"]["depends_on"]
    upstream = (DEPLOY / "nginx" / "compose" / "upstream.conf").read_text()
    assert re.search(r"upstream fleet_grafana \{\s*server grafana:3000;", upstream)
    assert "proxy_pass http://fleet_grafana;" in (DEPLOY / "nginx" / "grafana.conf").read_text()


def test_prometheus_scrapes_the_app_on_the_compose_network(compose: dict[str, Any]) -> None:
    command = compose["services"]["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/compose.yml" in command
    config = yaml.safe_load((DEPLOY / "prometheus" / "compose.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "fleet"]
    assert job["static_configs"][0]["targets"] == ["app:8080"]
    assert job["authorization"]["credentials_file"] == "/etc/prometheus/metrics_api_key"
