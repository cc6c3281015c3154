"""The group-commit writer shares a backlog with its idle worker."""

from __future__ import annotations

from fleet.ingest.stats import IngestStats
from fleet.ingest.writer import SPLIT_MIN_RECORDS, BatchWriter, Pending


async def test_a_backlog_is_split_with_the_idle_worker() -> None:
    """A worker taking a long queue while the other worker is free takes half of it; a busy other worker
    (or a short queue) leaves it all to the taker, up to max_records as before."""
    writer = BatchWriter(
        None,  # type: ignore[arg-type]  # _take never reaches the database
        IngestStats(),
        window_ms=20,
        max_records=5000,
        high_water=100_000,
        low_water=10_000,
        concurrency=2,
    )

    def fill(frames: int) -> None:
        for _ in range(frames):
            writer.submit(Pending(None, b"ack", 0.0, records=10))

    fill(SPLIT_MIN_RECORDS // 10 * 3)  # three times the threshold, in frames of 10 records
    first = writer._take()
    assert sum(item.records for item in first) == SPLIT_MIN_RECORDS * 3 // 2
    writer._committing = 1  # the first worker is writing: the second takes the rest
    second = writer._take()
    assert sum(item.records for item in second) == SPLIT_MIN_RECORDS * 3 // 2
    assert not writer._queue
    writer._committing = 0
    fill(SPLIT_MIN_RECORDS // 10 - 1)  # below the threshold: one batch
    assert len(writer._take()) == SPLIT_MIN_RECORDS // 10 - 1
    fill(700)  # 7,000 records, the other worker free: half each
    assert sum(item.records for item in writer._take()) == 3500
    writer._committing = 1
    fill(700)  # 10,500 queued, the other worker busy: max_records
    assert sum(item.records for item in writer._take()) == 5000
