"""The benchmarks import helpers from each other: every name they import must exist.

A benchmark's imports often sit inside ``main()`` (after argument parsing), so a helper renamed or moved in
``bench_ingest`` or ``bench.common`` would only fail when someone runs ``make bench`` - this catches it.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SHARED = {"bench_ingest": "bench_ingest", "bench.common": "bench.common", "common": "bench.common"}


def _imports(path: Path) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in SHARED:
            found.extend((SHARED[node.module], alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_names_imported_from_other_benchmarks_exist(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(BENCH.parent))
    for module_name, name in _imports(script):
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        assert hasattr(module, name), (
            f"{script.name} imports {name} from {module_name}, which has no such name"
        )


def _make_list(name: str) -> list[str]:
    """The words of a `NAME := ...` variable of the Makefile (continuation lines joined)."""
    text = (BENCH.parent / "Makefile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith(f"{name} :="):
            return line.split(":=", 1)[1].split()
    raise AssertionError(f"no {name} in the Makefile")


def test_every_benchmark_runs_in_bench_quick_with_a_quick_mode() -> None:
    """`make bench-quick` is the smoke test of the benchmarks: none may be skipped or missing from it."""
    scripts = sorted(path.name for path in BENCH.glob("bench_*.py"))
    assert sorted(Path(word).name for word in _make_list("BENCH_QUICK_SCRIPTS")) == scripts
    for name in scripts:
        assert "add_quick_argument(parser)" in (BENCH / name).read_text(), f"{name} has no --quick mode"
