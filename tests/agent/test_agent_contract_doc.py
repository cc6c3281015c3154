"""docs/DATA_CONTRACT.md agrees with the agent: version, error codes, settings and response shapes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.agent.config import CONTRACT_VERSION, AgentConfig
from fleet.agent.testing import AgentHandle

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "DATA_CONTRACT.md").read_text(encoding="utf-8")
SOURCES = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "fleet" / "agent").glob("*.py"))


def doc_examples() -> list[dict[str, Any]]:
    """The JSON objects of the document's ```json blocks that are complete (not elided)."""
    blocks = re.findall(r"```json\n(.*?)```", DOC, flags=re.DOTALL)
    examples = []
    for block in blocks:
        try:
            examples.append(json.loads(block))
        except json.JSONDecodeError:
            assert "…" in block, f"a JSON example does not parse:\n{block}"
    return examples


def example_with(key: str) -> dict[str, Any]:
    return next(e for e in doc_examples() if key in e)


def test_version_matches() -> None:
    assert f"**Contract version {CONTRACT_VERSION}.**" in DOC
    assert f"| {CONTRACT_VERSION} |" in DOC


def test_every_error_code_is_documented() -> None:
    codes = set(
        re.findall(
            r'(?:BadRequest|ApiError|error_response|__init__)\(\s*(?:[^,()"]+,\s*)?"([a-z_]+)"', SOURCES
        )
    )
    codes |= set(re.findall(r'\d{3}: "([a-z_]+)"', SOURCES))
    codes |= set(re.findall(r'_HTTP_CODES\.get\([^)]*"([a-z_]+)"\)', SOURCES))
    assert len(codes) >= 16, sorted(codes)
    for code in codes:
        assert f"`{code}`" in DOC, code


def test_every_setting_is_documented() -> None:
    for name in AgentConfig.model_fields:
        variable = f"AGENT_{name.upper()}"
        assert variable in DOC or (name.startswith("fault_") and "AGENT_FAULT_" in DOC), variable
    assert "OUTBOUND_API_KEY" in DOC


async def test_documented_shapes_match_the_agent(
    sim_agent: AgentHandle, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    client = client_for(sim_agent)
    start = (await client.get("/status")).json()["oldest_data"]
    live = {
        "online": (await client.get("/status")).json(),
        "channels": (await client.get("/channels")).json(),
        "next_from": (await client.get("/data", params={"from": start, "limit": 10})).json(),
        "alarms": (await client.get("/alarms", params={"from": start})).json(),
    }
    latest = (await client.get("/data/latest")).json()
    for key, response in live.items():
        example = example_with(key)
        assert set(example) == set(response), key
    assert set(example_with("channels")["channels"][0]) == set(live["channels"]["channels"][0])
    assert set(example_with("next_from")["rows"][0]) == set(live["next_from"]["rows"][0])
    assert set(example_with("alarms")["alarms"][0]) == set(live["alarms"]["alarms"][0])
    assert set(example_with("online")["limits"]) == set(live["online"]["limits"])
    documented_latest = next(e for e in doc_examples() if set(e) == {"time", "rows", "count"})
    assert set(documented_latest) == set(latest)


@pytest.mark.parametrize("path", ["/status", "/channels", "/data", "/data/latest", "/alarms", "/ingest"])
def test_every_endpoint_has_a_section(path: str) -> None:
    assert re.search(rf"^### `(GET|POST) {re.escape(path)}[`?]", DOC, flags=re.MULTILINE) or (
        path == "/ingest" and "## 9. Feeding the agent: `POST /ingest`" in DOC
    ), path
