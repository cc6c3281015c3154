"""Benchmark the device codecs (Navtelecom FLEX, Teltonika Codec 8E) against struct.iter_unpack; prints JSON.

Usage: ``python bench/bench_codec.py [--records 20000] [--repeat 7] [--quick]``; the result is written by
``bench/common.py`` to ``bench/results/codec.json`` (and ``codec-<UTC timestamp>.json``); ``--quick`` runs
2,000 records twice (``codec-quick.json``).

For each full mask (FLEX 1.0 = fields 1-69, 2.0 = 1-122, 3.0 = 1-255) the same record bytes are run
through, best of ``--repeat`` runs, single thread:

* ``baseline_iter_unpack``: ``struct.iter_unpack`` with the layout's fixed format over all record bytes
  in one call, tuples discarded (the most favourable case for the baseline);
* ``decode``: ``FlexLayout.decode`` of the records of each ``~A`` frame (8 records) → ``FlexRecord``
  objects, which are then dropped as a listener does after storing them;
* ``decode_all_kept``: one ``decode`` call for all records, all kept alive (shows the cost of the
  garbage collector walking many live objects; not how the listener works);
* ``frames_via_session``: ``NavtelecomSession.feed`` of each frame: framing, CRC-8 check, decode, outputs;
* ``materialise_as_dict``: ``decode`` plus ``as_dict()`` on every record (all core properties and
  attributes converted: what storing every value costs).

* ``rows``: ``frames_via_session`` plus the protocol's row source (positions, CAN rows, attributes as
  JSON): the codec's whole share of the ingest path.

Teltonika (``teltonika_8e``): the simulator's Codec 8E records (12 IO elements of a typical FMB set),
10 per AVL packet; the baseline is ``struct.iter_unpack`` with the one fixed format those records happen
to share (the ideal decoder for exactly these bytes); ``decode`` is ``decode_records`` per packet,
``frames_via_session`` adds framing and the CRC-16.

Targets from the issue: ``decode`` ≥ 50 % of ``baseline`` and ≥ 200,000 FLEX 2.0 records/s.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BenchReport, add_quick_argument
from fleet.protocol.navtelecom import (
    NavtelecomSession,
    Negotiation,
    RowBuilder,
    archive,
    build_record,
    layout_for_fields,
    mask_from_fields,
)
from fleet.protocol.navtelecom.fields import field_spec
from fleet.protocol.teltonika import CODEC_8E, TeltonikaRows, TeltonikaSession, decode_records
from fleet.protocol.teltonika.simulation import TeltonikaModel

VERSIONS = {"1.0": (10, 69), "2.0": (20, 122), "3.0": (30, 255)}
RECORDS_PER_FRAME = 8


def random_wire_value(rng: random.Random, fmt: str) -> Any:
    """Return a random wire value for a field format (tuple for multi-part fields)."""
    items = []
    for code, count in _codes(fmt):
        for _ in range(count if code != "s" else 1):
            items.append(_random_item(rng, code, count))
    return items[0] if len(items) == 1 else tuple(items)


def _codes(fmt: str) -> list[tuple[str, int]]:
    result, digits = [], ""
    for char in fmt:
        if char.isdigit():
            digits += char
        else:
            result.append((char, int(digits or 1)))
            digits = ""
    return result


def _random_item(rng: random.Random, code: str, count: int) -> Any:
    if code == "s":
        return rng.randbytes(count)
    if code == "f":
        return struct.unpack("<f", struct.pack("<f", rng.uniform(0, 1000)))[0]
    size = struct.calcsize("<" + code)
    if code.islower():
        return rng.randrange(-(1 << (8 * size - 1)), 1 << (8 * size - 1))
    return rng.randrange(0, 1 << (8 * size))


def make_records(fields: tuple[int, ...], count: int, seed: int = 1) -> list[bytes]:
    """Return ``count`` encoded records with plausible core values and random other fields."""
    rng = random.Random(seed)
    layout = layout_for_fields(fields)
    records = []
    for i in range(count):
        extra = {
            n: random_wire_value(rng, field_spec(n).fmt)
            for n in fields
            if n not in (1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20)
        }
        records.append(
            build_record(
                layout,
                index=i,
                event_code=0x1250,
                device_time=1_700_000_000 + i,
                fix_time=1_700_000_000 + i,
                valid=True,
                satellites=12,
                latitude=55.75 + i * 1e-5,
                longitude=37.61,
                altitude_m=150.5,
                speed_kmh=rng.uniform(0, 120),
                course=rng.randrange(360),
                odometer_km=1234.5,
                power_v=12.6,
                battery_v=4.1,
                fields=extra,
            )
        )
    return records


SAMPLES: dict[str, list[float]] = {}  # every run's records/s, by "<version>.<stage>", for the report


def best_rate(func: Callable[[], int], repeat: int, key: str = "") -> float:
    """Return the best records/s over ``repeat`` runs of ``func`` (which returns its record count)."""
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        n = func()
        elapsed = time.perf_counter() - start
        rates.append(n / elapsed)
    if key:
        SAMPLES[key] = rates
    return max(rates)


def rates_and_ratios(rates: dict[str, float]) -> dict[str, Any]:
    """Return records/s per stage and each stage's ratio to the baseline."""
    return {
        "records_per_second": {key: round(value) for key, value in rates.items()},
        "ratio_to_baseline": {
            key: round(value / rates["baseline_iter_unpack"], 3)
            for key, value in rates.items()
            if key != "baseline_iter_unpack"
        },
    }


def bench_version(name: str, count: int, repeat: int) -> dict[str, Any]:
    version, bits = VERSIONS[name]
    fields = tuple(range(1, bits + 1))
    layout = layout_for_fields(fields)
    records = make_records(fields, count)
    data = b"".join(records)
    baseline_struct = struct.Struct(layout.struct.format)
    frames = [archive(records[i : i + RECORDS_PER_FRAME]) for i in range(0, count, RECORDS_PER_FRAME)]
    negotiation = Negotiation(version, version, bits, mask_from_fields(fields, bits))

    def baseline() -> int:
        n = 0
        for _ in baseline_struct.iter_unpack(data):
            n += 1
        return n

    def decode() -> int:
        n = 0
        for frame in frames:
            n += len(layout.decode(frame, 3, frame[2]))
        return n

    def decode_all_kept() -> int:
        return len(layout.decode(data, 0, count))

    def through_session() -> int:
        session = NavtelecomSession.restore(negotiation)
        n = 0
        for frame in frames:
            for out in session.feed(frame):
                n += len(out.records)
        return n

    def materialise() -> int:
        n = 0
        for frame in frames:
            for record in layout.decode(frame, 3, frame[2]):
                record.as_dict()
                n += 1
        return n

    builder = RowBuilder()
    now = datetime.now(UTC)

    def rows() -> int:
        session = NavtelecomSession.restore(negotiation)
        n = 0
        for frame in frames:
            for out in session.feed(frame):
                n += builder.telemetry(1, out, now).records
        return n

    assert decode() == baseline() == through_session() == decode_all_kept() == rows() == count
    stages = {
        "baseline_iter_unpack": baseline,
        "decode": decode,
        "decode_all_kept": decode_all_kept,
        "frames_via_session": through_session,
        "materialise_as_dict": materialise,
        "rows": rows,
    }
    rates = {key: best_rate(func, repeat, f"flex{name}.{key}") for key, func in stages.items()}
    return {
        "fields": bits,
        "record_bytes": layout.size,
        "records": count,
        **rates_and_ratios(rates),
    }


TELTONIKA_RECORDS_PER_PACKET = 10


def bench_teltonika(count: int, repeat: int) -> dict[str, Any]:
    """Codec 8E packets of 10 records as the simulator sends them."""
    model = TeltonikaModel("350000000000001", random.Random(1), codec="8E")
    records = [model.record(i, 1_700_000_000 + i) for i in range(count)]
    size = len(records[0])
    assert all(len(record) == size for record in records)
    # The fixed format these records share: 24-byte head, event id and total, then each width group.
    head = ">QBiihHBH" + "HH"
    groups = {1: "B", 2: "H", 4: "I", 8: "Q"}
    io = model._io(0)
    # Per width group: its U16 count, then (U16 id, value) pairs; then the (empty) NX group's count.
    fmt = head + "".join(
        "H" + "".join("H" + code for _e, w, _v in io if w == width) for width, code in groups.items()
    )
    fmt += "H"
    baseline_struct = struct.Struct(fmt)
    assert baseline_struct.size == size, (baseline_struct.size, size)
    data = b"".join(records)
    frames = [
        model.frame(records[i : i + TELTONIKA_RECORDS_PER_PACKET])
        for i in range(0, count, TELTONIKA_RECORDS_PER_PACKET)
    ]
    builder = TeltonikaRows()
    now = datetime.now(UTC)

    def baseline() -> int:
        n = 0
        for _ in baseline_struct.iter_unpack(data):
            n += 1
        return n

    def decode() -> int:
        n = 0
        for frame in frames:
            n += len(decode_records(frame, CODEC_8E, frame[9], 10, len(frame) - 5))
        return n

    def through_session() -> int:
        session = TeltonikaSession()
        session.imei = "350000000000001"
        n = 0
        for frame in frames:
            for out in session.feed(frame):
                n += len(out.records)  # type: ignore[union-attr]
        return n

    def rows() -> int:
        session = TeltonikaSession()
        session.imei = "350000000000001"
        n = 0
        for frame in frames:
            for out in session.feed(frame):
                n += builder.telemetry(1, out, now).records  # type: ignore[arg-type]
        return n

    assert baseline() == decode() == through_session() == rows() == count
    stages = {
        "baseline_iter_unpack": baseline,
        "decode": decode,
        "frames_via_session": through_session,
        "rows": rows,
    }
    rates = {key: best_rate(func, repeat, f"teltonika_8e.{key}") for key, func in stages.items()}
    return {
        "codec": "8E",
        "io_elements": len(io),
        "record_bytes": size,
        "records_per_packet": TELTONIKA_RECORDS_PER_PACKET,
        "records": count,
        **rates_and_ratios(rates),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    add_quick_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.records, args.repeat = 2000, 2
    report = BenchReport(
        "codec",
        quick=args.quick,
        parameters={"records": args.records, "repeat": args.repeat, "records_per_frame": RECORDS_PER_FRAME},
    )
    report.note("records/s are the best of `repeat` runs (single thread); every run is in `samples`")
    results = {name: bench_version(name, args.records, args.repeat) for name in VERSIONS}
    results["teltonika_8e"] = bench_teltonika(args.records, args.repeat)
    for key, rates in SAMPLES.items():
        report.add_samples(f"{key}_records_per_s", rates, digits=0)
    for name, result in results.items():
        label = name if name == "teltonika_8e" else f"flex{name}"
        rates = result["records_per_second"]
        report.add_baseline(f"{label}.iter_unpack_records_per_s", rates["baseline_iter_unpack"])
        for stage, value in result["ratio_to_baseline"].items():
            report.ratios[f"{label}.{stage}_to_iter_unpack"] = value
    for name in VERSIONS:
        report.add_target(
            f"flex{name}.decode_to_iter_unpack", results[name]["ratio_to_baseline"]["decode"], 0.5
        )
    report.add_target("flex2.0.decode_records_per_s", results["2.0"]["records_per_second"]["decode"], 200_000)
    report.results = results
    print(json.dumps(results, indent=2))
    report.write()
    return 0 if report.targets_met() else 1


if __name__ == "__main__":
    sys.exit(main())
