"""The SQLite ring buffer on its own: writes, windows, pages, retention, alarms, failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleet.agent.channels import simulated_channels
from fleet.agent.errors import StoreUnavailable, UnknownChannel
from fleet.agent.store import AgentStore, Alarm

T0 = 1_700_000_000_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AgentStore]:
    store = await AgentStore.open(tmp_path / "buffer.db")
    await store.upsert_channels(simulated_channels(5))
    yield store
    await store.close()


def grid(seconds: int, channels: int = 5) -> list[tuple[int, int, float]]:
    """Rows of every channel at each whole second from T0."""
    return [(ch, T0 + s * 1000, ch + s / 10) for s in range(seconds) for ch in range(1, channels + 1)]


async def test_open_uses_wal(store: AgentStore) -> None:
    assert (store.path.parent / "buffer.db-wal").exists()


async def test_append_ignores_duplicates_and_counts(store: AgentStore) -> None:
    result = await store.append_rows(grid(10))
    assert (result.written, result.duplicates) == (50, 0)
    again = await store.append_rows([*grid(2), (1, T0 + 99_000, 1.0)])
    assert (again.written, again.duplicates) == (1, 10)
    assert store.row_count == 51
    # The first value of a (channel, time) wins, and "latest" ignores the repeat too.
    page = await store.read_window(T0, T0 + 1, 100)
    assert page.rows[0] == (1, T0, 1.0)


async def test_append_refuses_unknown_channels_and_non_finite_values(store: AgentStore) -> None:
    with pytest.raises(UnknownChannel) as info:
        await store.append_rows([(1, T0, 1.0), (77, T0, 1.0), (78, T0, 1.0)])
    assert info.value.channel_ids == [77, 78]
    with pytest.raises(ValueError, match="finite"):
        await store.append_rows([(1, T0, float("nan"))])
    assert store.row_count == 0


async def test_window_is_half_open_and_ordered(store: AgentStore) -> None:
    await store.append_rows(reversed(grid(10)))
    page = await store.read_window(T0 + 2000, T0 + 5000, 1000)
    times = sorted({t for _, t, _ in page.rows})
    assert times == [T0 + 2000, T0 + 3000, T0 + 4000]
    assert page.rows == sorted(page.rows, key=lambda r: (r[1], r[0]))
    assert not page.truncated and page.next_from is None
    assert (await store.read_window(T0 + 2000, T0 + 2000, 10)).rows == []


async def test_pages_end_on_a_timestamp_boundary(store: AgentStore) -> None:
    await store.append_rows(grid(10))
    page = await store.read_window(T0, T0 + 10_000, 12)  # 12 rows would split the third second
    assert page.truncated and page.next_from == T0 + 2000
    assert len(page.rows) == 10 and {t for _, t, _ in page.rows} == {T0, T0 + 1000}


async def test_paging_by_next_from_returns_every_row_once(store: AgentStore) -> None:
    rows = grid(37)
    await store.append_rows(rows)
    seen: list[tuple[int, int, float]] = []
    start, pages = T0, 0
    while True:
        page = await store.read_window(start, T0 + 37_000, 23)
        seen.extend(page.rows)
        pages += 1
        if not page.truncated:
            break
        assert page.next_from is not None and page.next_from > start
        start = page.next_from
    assert sorted(seen, key=lambda r: (r[1], r[0])) == sorted(rows, key=lambda r: (r[1], r[0]))
    assert len(seen) == len(set(seen)) and pages > 1


async def test_a_timestamp_larger_than_the_limit_is_returned_whole(store: AgentStore) -> None:
    await store.append_rows(grid(3))
    page = await store.read_window(T0, T0 + 3000, 2)
    assert [r[0] for r in page.rows] == [1, 2, 3, 4, 5]
    assert page.truncated and page.next_from == T0 + 1
    last = await store.read_window(T0 + 2000, T0 + 3000, 2)
    assert len(last.rows) == 5 and not last.truncated and last.next_from is None


async def test_latest_and_span(store: AgentStore) -> None:
    assert await store.data_span() == (None, None)
    await store.append_rows(grid(4))
    await store.append_rows([(2, T0 - 5000, -1.0)])  # older: must not replace channel 2's latest
    latest = await store.latest()
    assert [(ch, t) for ch, t, _ in latest] == [(ch, T0 + 3000) for ch in range(1, 6)]
    assert await store.data_span() == (T0 - 5000, T0 + 3000)


async def test_prune_by_age_and_by_row_count(store: AgentStore) -> None:
    await store.append_rows(grid(100))
    assert await store.prune(older_than=T0 + 40_000, max_rows=10_000) == 200
    assert store.row_count == 300
    assert await store.prune(older_than=0, max_rows=123) == 177
    assert store.row_count == 123
    oldest, newest = await store.data_span()
    assert newest == T0 + 99_000
    # The oldest rows went first: what is left is the newest 123 rows.
    page = await store.read_window(0, T0 + 100_000, 1000)
    assert len(page.rows) == 123 and page.rows[0][1] == oldest
    # A channel whose samples are all gone leaves /data/latest as well.
    await store.prune(older_than=T0 + 1_000_000, max_rows=10)
    assert store.row_count == 0 and await store.latest() == []


async def test_row_count_survives_reopen(tmp_path: Path) -> None:
    first = await AgentStore.open(tmp_path / "b.db")
    await first.upsert_channels(simulated_channels(5))
    await first.append_rows(grid(7))
    await first.close()
    second = await AgentStore.open(tmp_path / "b.db")
    try:
        assert second.row_count == 35 and second.channel_ids == frozenset(range(1, 6))
    finally:
        await second.close()


async def test_alarm_upsert_only_adds_a_resolution(store: AgentStore) -> None:
    raised = Alarm(7, 3, "critical", "hot", T0)
    assert await store.upsert_alarms([raised], changed_at=T0, source="test") == 1
    # A repeat that is still open, or that tries to rewrite level and message, changes nothing.
    assert (
        await store.upsert_alarms([Alarm(7, 3, "info", "other", T0)], changed_at=T0 + 1, source="test") == 0
    )
    resolved = Alarm(7, 3, "info", "other", T0, T0 + 5000)
    assert await store.upsert_alarms([resolved], changed_at=T0 + 5000, source="test") == 1
    # Once resolved, the resolution time is fixed.
    assert (
        await store.upsert_alarms([Alarm(7, 3, "critical", "hot", T0, T0 + 9000)], changed_at=T0, source="t")
        == 0
    )
    alarms, truncated = await store.alarms_in_window(T0 + 5000, T0 + 5001, 10)
    assert alarms == [Alarm(7, 3, "critical", "hot", T0, T0 + 5000)] and not truncated


async def test_alarm_window_matches_raise_resolution_or_change(store: AgentStore) -> None:
    await store.upsert_alarms([Alarm(1, 1, "info", "raised only", T0)], changed_at=T0, source="t")
    await store.upsert_alarms(
        [Alarm(2, 1, "info", "resolved later", T0 - 60_000, T0 + 10_000)], changed_at=None, source="t"
    )
    # Written late: both times lie before the window, but the write itself falls inside it.
    await store.upsert_alarms(
        [Alarm(3, 2, "warning", "late", T0 - 90_000, T0 - 80_000)], changed_at=T0 + 20_000, source="t"
    )
    ids = lambda found: [a.alarm_id for a in found[0]]  # noqa: E731
    assert ids(await store.alarms_in_window(T0, T0 + 1, 10)) == [1]
    assert ids(await store.alarms_in_window(T0 + 10_000, T0 + 10_001, 10)) == [2]
    assert ids(await store.alarms_in_window(T0 + 20_000, T0 + 20_001, 10)) == [3]
    assert ids(await store.alarms_in_window(T0 - 100_000, T0 + 100_000, 10)) == [3, 2, 1]  # by raised_at
    found, truncated = await store.alarms_in_window(T0 - 100_000, T0 + 100_000, 2)
    assert len(found) == 2 and truncated


async def test_resolve_open_alarms_of_one_source(store: AgentStore) -> None:
    await store.upsert_alarms([Alarm(1, 1, "info", "a", T0)], changed_at=None, source="simulator")
    await store.upsert_alarms([Alarm(2, 1, "info", "b", T0)], changed_at=None, source="ingest")
    assert await store.resolve_open_alarms("simulator", T0 + 100) == 1
    alarms, _ = await store.alarms_in_window(T0, T0 + 1, 10)
    assert {a.alarm_id: a.resolved_at for a in alarms} == {1: T0 + 100, 2: None}


async def test_prune_keeps_open_alarms(store: AgentStore) -> None:
    await store.upsert_alarms(
        [Alarm(1, 1, "info", "open", T0), Alarm(2, 1, "info", "closed", T0, T0 + 1)],
        changed_at=None,
        source="t",
    )
    await store.prune(older_than=T0 + 10_000, max_rows=100)
    alarms, _ = await store.alarms_in_window(T0, T0 + 1, 10)
    assert [a.alarm_id for a in alarms] == [1]


async def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = await AgentStore.open(tmp_path / "c.db")
    await store.close()
    assert not await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.read_window(0, 1, 1)
    with pytest.raises(StoreUnavailable):
        await store.prune(older_than=0, max_rows=1)
