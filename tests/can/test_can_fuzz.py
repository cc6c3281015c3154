"""Arbitrary input never raises: random identifiers, payloads and FLEX field values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.can import CanDecoder, CanSignal, flex_can_signals

DECODER = CanDecoder(Path(__file__).parent / "dbc")
KNOWN_IDS = [
    0x0CF00400,
    0x0CF00300,
    0x18F0010B,
    0x18F00503,
    0x18FD0900,
    0x18FDD127,
    0x18FE563D,
    0x0CFE6CEE,
    0x18FE700F,
    0x18FEC017,
    0x18FEC1EE,
    0x18FECA00,
    0x18FEE0EE,
    0x18FEE500,
    0x18FEE900,
    0x18FEEA0F,
    0x18FEEE00,
    0x18FEF100,
    0x18FEF200,
    0x18FEF500,
    0x18FEF700,
    0x18FEFC17,
    0x18FF2117,
    0x18EF17FE,
    0x18FF5017,
    0x321,
    *range(0x7E8, 0x7F0),
]
FAST = settings(max_examples=400, deadline=None)


def check(signals: list[CanSignal]) -> None:
    assert isinstance(signals, list)
    for signal in signals:
        assert isinstance(signal, CanSignal)
        assert signal.name and signal.source
        assert signal.value is None or isinstance(signal.value, int | float | str)
        if isinstance(signal.value, float):
            assert math.isfinite(signal.value)


@FAST
@given(
    can_id=st.integers(min_value=-(2**33), max_value=2**33),
    data=st.binary(max_size=72),
    extended=st.sampled_from([None, True, False]),
)
def test_any_frame(can_id: int, data: bytes, extended: bool | None) -> None:
    before = DECODER.stats.frames
    check(DECODER.decode(can_id, data, extended))
    assert DECODER.stats.frames == before + 1


@FAST
@given(can_id=st.sampled_from(KNOWN_IDS), data=st.binary(min_size=0, max_size=10))
def test_known_ids_any_payload(can_id: int, data: bytes) -> None:
    check(DECODER.decode(can_id, data))


@FAST
@given(can_id=st.sampled_from(KNOWN_IDS), data=st.binary(min_size=8, max_size=8))
def test_known_ids_full_frames_always_decode(can_id: int, data: bytes) -> None:
    signals = DECODER.decode(can_id, data)
    check(signals)
    if can_id < 0x7E8 or can_id > 0x7EF:
        assert signals


@FAST
@given(
    length=st.integers(min_value=0, max_value=15),
    service=st.sampled_from([0x41, 0x41, 0x41, 0x7F, 0x49]),
    rest=st.binary(max_size=6),
)
def test_obd2_shaped_frames(length: int, service: int, rest: bytes) -> None:
    check(DECODER.decode(0x7E8, bytes([length, service]) + rest))


flex_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=6),
    st.tuples(st.integers(), st.integers()),
    st.tuples(st.text(max_size=8), st.floats()),
    st.dictionaries(st.sampled_from(["percent", "litres", "lamps", "dtc", "x"]), st.integers() | st.floats()),
)


@FAST
@given(fields=st.dictionaries(st.integers(min_value=0, max_value=260), flex_values, max_size=30))
def test_flex_any_fields(fields: dict[int, Any]) -> None:
    check(flex_can_signals(fields))
