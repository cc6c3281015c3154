"""Damaged input: single-byte flips of every recorded frame, random bytes, and a regression corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.protocol.navtelecom import (
    CommandAnswer,
    DeviceSession,
    Fatal,
    KeepAlive,
    NavtelecomSession,
    Negotiation,
    Output,
    RejectCode,
    Rejected,
    Reply,
    Telemetry,
    TextSession,
    archive,
    build_record,
    current,
    event,
    flex_negotiation,
    handshake,
    layout_for_fields,
    mask_from_fields,
)

from .conftest import PROTOCOL_SETTINGS, vector_groups
from .strategies import layouts, record_values
from .vector_replay import session_for

GROUPS = vector_groups()
CORPUS = Path(__file__).parent / "corpus" / "navtelecom_regressions.json"
_DATA_OUTPUTS = (Reply, Telemetry, CommandAnswer)


def check_invariants(session: Any, chunks: list[bytes]) -> list[Output]:
    """Feed ``chunks``; check the invariants every session keeps whatever the input."""
    outputs: list[Output] = []
    fed = b""
    for chunk in chunks:
        fed += chunk
        new = session.feed(chunk)
        if outputs and isinstance(outputs[-1], Fatal):
            assert new == [], "no output after a fatal error"
        outputs.extend(new)
        assert session.buffered <= max(len(fed), 1)
    text = isinstance(session, TextSession) or getattr(session, "dialect", None) == "text"
    cursor = 0
    for out in outputs:
        if isinstance(out, Fatal):
            continue
        # Frames follow each other back to back; only the text dialect skips whitespace between frames.
        gap_end = fed.find(out.raw, cursor) if text else cursor
        assert gap_end >= 0 and fed[gap_end : gap_end + len(out.raw)] == out.raw, "outputs out of order"
        assert not fed[cursor:gap_end].strip(b" \t\r\n"), "bytes skipped between frames"
        cursor = gap_end + len(out.raw)
    fatal = [out for out in outputs if isinstance(out, Fatal)]
    assert len(fatal) <= 1 and (not fatal or outputs[-1] is fatal[0])
    return outputs


@pytest.mark.parametrize("group", list(GROUPS), ids=list(GROUPS))
def test_every_single_byte_flip_is_rejected_or_harmless(group: str) -> None:
    vectors = GROUPS[group]
    frames = [v.raw for v in vectors]
    baseline = session_for(vectors).feed(b"".join(frames))
    accepted = [out for out in baseline if isinstance(out, _DATA_OUTPUTS)]
    for i, frame in enumerate(frames):
        for position in range(len(frame)):
            for flip in (0xFF, 0x01, 0x80):
                damaged = bytearray(frame)
                damaged[position] ^= flip
                stream = b"".join(frames[:i]) + bytes(damaged) + b"".join(frames[i + 1 :])
                outputs = check_invariants(session_for(vectors), [stream])
                where = f"frame {i} byte {position} ^ 0x{flip:02X}"
                assert outputs[:i] == baseline[:i], where
                rest = outputs[i:]
                if not rest:
                    continue  # the damage made the frame look longer: still waiting for bytes
                first = rest[0]
                if isinstance(first, Rejected):
                    assert first.code in (
                        RejectCode.BAD_CHECKSUM,
                        RejectCode.BAD_FORMAT,
                        RejectCode.UNKNOWN_MESSAGE,
                        RejectCode.UNSUPPORTED,
                    ), where
                    # Consumed exactly: the stream goes on unchanged, unless the lost frame was a
                    # negotiation the following FLEX frames depended on.
                    if len(first.raw) == len(frame) and not isinstance(baseline[i], Reply):
                        assert rest[1:] == baseline[i + 1 :], where
                elif isinstance(first, Fatal):
                    assert rest == [first], where
                else:
                    # Only a byte the checksums do not cover may change, and then the decode is unchanged.
                    assert isinstance(first, KeepAlive) or first in accepted, where
                for out in rest:
                    if isinstance(out, _DATA_OUTPUTS):
                        assert out in accepted, f"{where}: damaged data accepted: {out}"


@PROTOCOL_SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_into_a_fresh_session(data: bytes) -> None:
    check_invariants(NavtelecomSession(), [data])


@PROTOCOL_SETTINGS
@given(st.data())
def test_random_bytes_into_a_negotiated_session(data: st.DataObject) -> None:
    layout = data.draw(layouts())
    session = NavtelecomSession.restore(
        Negotiation(30, 30, 255, mask_from_fields(layout.fields, 255), layout.field100_size)
    )
    prefix = data.draw(st.sampled_from([b"", b"~A", b"~T", b"~C", b"~E", b"~X", b"@NTC", b"\x7f"]))
    chunks = data.draw(st.lists(st.binary(max_size=200), max_size=4))
    check_invariants(session, [prefix, *chunks])


@settings(PROTOCOL_SETTINGS, max_examples=100)
@given(st.data())
def test_mutated_valid_streams(data: st.DataObject) -> None:
    layout = data.draw(layouts().filter(lambda lay: lay.size <= 200))
    record = layout.encode(data.draw(record_values(layout)))
    stream = bytearray(
        handshake("123456789012345")
        + flex_negotiation(layout.fields, version=30)
        + archive([record, record])
        + event(5, record)
        + current(record)
    )
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(stream) - 1))
        stream[position] = data.draw(st.integers(0, 255))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    chunks = [bytes(stream[a:b]) for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    check_invariants(NavtelecomSession(field100_size=layout.field100_size), chunks)


@PROTOCOL_SETTINGS
@given(st.binary(max_size=700))
def test_random_bytes_into_text_and_auto_sessions(data: bytes) -> None:
    check_invariants(TextSession(), [data])
    check_invariants(DeviceSession(), [b"~A1" + data])
    check_invariants(DeviceSession(), [data])


@PROTOCOL_SETTINGS
@given(st.text(alphabet="~ATXE0123456789,.-abcdefABCDEF\r\n", max_size=300))
def test_text_like_noise(text: str) -> None:
    check_invariants(TextSession(), [text.encode("ascii")])


def _session_for_case(case: dict[str, Any]) -> Any:
    if case["session"] == "text":
        return TextSession()
    if case["session"] == "auto":
        return DeviceSession(allow_text=case.get("allow_text", True))
    if case.get("fields"):
        fields = tuple(case["fields"])
        return NavtelecomSession.restore(
            Negotiation(30, 30, 255, mask_from_fields(fields, 255)), max_frame_bytes=case.get("cap", 65551)
        )
    return NavtelecomSession(max_frame_bytes=case.get("cap", 65551))


def _describe(out: Output) -> str:
    name = type(out).__name__
    code = getattr(out, "code", None) or getattr(out, "kind", None)
    return f"{name}:{code}" if code else name


@pytest.mark.parametrize(
    "case", json.loads(CORPUS.read_text(encoding="utf-8")), ids=lambda case: case["name"]
)
def test_regression_corpus(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    whole = check_invariants(_session_for_case(case), [data])
    assert [_describe(out) for out in whole] == case["expect"]
    by_byte = check_invariants(_session_for_case(case), [data[i : i + 1] for i in range(len(data))])
    # A fatal error's excerpt shows what was buffered at the time, which depends on the chunking.
    assert [_describe(out) for out in by_byte] == case["expect"]
    assert [out for out in by_byte if not isinstance(out, Fatal)] == [
        out for out in whole if not isinstance(out, Fatal)
    ]


def test_corpus_builder_is_in_sync() -> None:
    """The corpus is literal bytes; this rebuilds the encoder-made cases to catch encoder drift."""
    layout = layout_for_fields((1, 2, 3, 8, 9, 10, 11))
    record = build_record(
        layout,
        index=3,
        event_code=1,
        device_time=1_700_000_000,
        valid=True,
        satellites=5,
        fix_time=1_700_000_000,
        latitude=1.5,
        longitude=-2.5,
    )
    cases = {case["name"]: case for case in json.loads(CORPUS.read_text(encoding="utf-8"))}
    assert bytes.fromhex(cases["archive_then_bad_crc_then_event"]["hex"]).startswith(archive([record]))
