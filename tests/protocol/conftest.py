"""Shared fixtures for the protocol codec tests: recorded vectors and the Hypothesis profile."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Applied per test (not as a global profile, which would change other packages' tests). deadline=None:
# CI machines vary in speed and a slow example is not a bug; the example counts keep the whole protocol
# suite well under a minute. HYPOTHESIS_PROTOCOL_EXAMPLES raises them for a longer local fuzzing run.
PROTOCOL_SETTINGS = settings(
    deadline=None,
    max_examples=int(os.environ.get("HYPOTHESIS_PROTOCOL_EXAMPLES", "300")),
    suppress_health_check=[HealthCheck.too_slow],
)

_HERE = Path(__file__).parent
_REPO = _HERE.parents[1]
# The shared spec folder sits beside the checkout (../shared); CI lays out a copy the same way. A
# committed copy keeps the tests runnable anywhere, and a test checks the two agree when both exist.
SHARED_VECTORS = _REPO.parent / "shared" / "vectors" / "navtelecom_public.json"
LOCAL_VECTORS = _HERE / "data" / "navtelecom_public.json"


def vectors_path() -> Path:
    """Return the vector file to use: the shared one when present, else the committed copy."""
    override = os.environ.get("NAVTELECOM_VECTORS")
    if override:
        return Path(override)
    return SHARED_VECTORS if SHARED_VECTORS.exists() else LOCAL_VECTORS


@dataclass(frozen=True)
class Vector:
    """One recorded frame with what it must decode to."""

    group: str
    index: int
    raw: bytes
    kind: str
    call: str
    expects: dict[str, Any]
    reference: dict[str, Any]
    note: str

    @property
    def reply(self) -> bytes | None:
        """Return the exact server reply/ack the vector calls for, if any."""
        text = self.reference.get("server_reply_hex") or self.expects.get("server_reply_hex")
        return bytes.fromhex(text) if text else None

    @property
    def id(self) -> str:
        return f"{self.group}#{self.index}"


def load_vectors() -> list[Vector]:
    """Return every vector in file order."""
    data = json.loads(vectors_path().read_text(encoding="utf-8"))
    result = []
    for item in data:
        source = item["source"]
        test = source.get("test_method") or source.get("test") or source.get("section", "")
        group = f"{source['path'].rsplit('/', 1)[-1]}:{test}"
        result.append(
            Vector(
                group=group,
                index=item["index"],
                raw=bytes.fromhex(item["hex"]),
                kind=item["kind"],
                call=item["call"],
                expects=item.get("expects") or {},
                reference=item.get("reference") or {},
                note=item.get("note", ""),
            )
        )
    return result


def vector_groups() -> dict[str, list[Vector]]:
    """Return the vectors grouped per originating test (one connection each), in order."""
    groups: dict[str, list[Vector]] = {}
    for vector in load_vectors():
        groups.setdefault(vector.group, []).append(vector)
    return groups


@pytest.fixture(scope="session")
def vectors() -> Iterator[list[Vector]]:
    yield load_vectors()
