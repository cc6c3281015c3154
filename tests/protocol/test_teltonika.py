"""Teltonika codec: the public vectors (whole, byte by byte, all in one read), every single-byte corruption,
framing limits, commands, the IO table and its generated document, and round trips through the encoder."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.protocol.base import (
    CommandAnswer,
    CustomCommand,
    Fatal,
    Identify,
    Ignored,
    KeepAlive,
    OutputCommand,
    Reboot,
    Rejected,
    RequestPosition,
    ResendArchive,
    Telemetry,
    UnsupportedCommand,
)
from fleet.protocol.teltonika import (
    CODEC_8,
    CODEC_8E,
    CODEC_16,
    TeltonikaRows,
    TeltonikaSession,
    avl_packet,
    command_bytes,
    crc16_arc,
    docgen,
    encode_message,
    encode_record,
    imei_packet,
    response,
)

REPO = Path(__file__).resolve().parents[2]
VECTORS: list[dict[str, Any]] = json.loads(
    (REPO / "tests" / "protocol" / "data" / "teltonika_public.json").read_text()
)
TCP = [v for v in VECTORS if v["transport"] == "tcp"]
AVL = [v for v in TCP if v["kind"] == "avl" and not v["expects"].get("reject")]
IMEI = "356307042441013"


def login(imei: str = IMEI) -> TeltonikaSession:
    session = TeltonikaSession()
    (out,) = session.feed(imei_packet(imei))
    assert out == Identify(imei, b"\x01", b"\x00", imei_packet(imei))
    return session


def io_map(record: Any) -> dict[str, Any]:
    return {str(k): v.hex() if isinstance(v, bytes) else v for k, v in record.io}


def check_records(out: Telemetry, expects: dict[str, Any]) -> None:
    assert out.ack == expects["record_count"].to_bytes(4, "big")
    assert len(out.records) == expects["record_count"]
    for record, want in zip(out.records, expects["records"], strict=True):
        assert record.timestamp_ms == want["timestamp_ms"]
        assert record.priority == want["priority"]
        assert round(record.latitude, 7) == want["lat"] and round(record.longitude, 7) == want["lon"]
        assert (record.altitude, record.angle, record.satellites, record.speed) == (
            want["altitude"],
            want["angle"],
            want["satellites"],
            want["speed"],
        )
        assert record.event_id == want["event_id"]
        assert record.generation_type == want.get("generation_type")
        assert io_map(record) == want["io"]


def test_crc_is_crc16_arc() -> None:
    assert crc16_arc(b"123456789") == 0xBB3D
    data = bytes.fromhex(
        "08010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000"
        "01"
    )
    assert crc16_arc(data) == 0xC7CF


@pytest.mark.parametrize("vector", [v for v in TCP if v["kind"] == "imei"], ids=lambda v: v["id"])
def test_imei_login(vector: dict[str, Any]) -> None:
    session = TeltonikaSession()
    (out,) = session.feed(bytes.fromhex(vector["hex"]))
    assert isinstance(out, Identify) and out.identity == vector["expects"]["imei"]
    assert out.accept.hex() == vector["server_reply_hex"] and out.refuse == b"\x00"
    assert session.ready and session.identity == vector["expects"]["imei"]


@pytest.mark.parametrize("vector", AVL, ids=lambda v: v["id"])
@pytest.mark.parametrize("split", ["whole", "bytes", "reads"])
def test_avl_vectors(vector: dict[str, Any], split: str) -> None:
    session = login(vector["session_imei"])
    data = bytes.fromhex(vector["hex"])
    outputs: list[Any] = []
    if split == "whole":
        outputs = session.feed(data)
    elif split == "bytes":
        for position in range(len(data)):
            outputs += session.feed(data[position : position + 1])
    else:
        for chunk in vector.get("reads") or [vector["hex"]]:
            outputs += session.feed(bytes.fromhex(chunk))
    (out,) = outputs
    assert isinstance(out, Telemetry) and out.raw == data
    assert out.ack.hex() == vector["server_reply_hex"]
    check_records(out, vector["expects"])


def test_several_packets_in_one_read_each_get_their_ack() -> None:
    session = login()
    stream = b"\xff" + b"".join(bytes.fromhex(v["hex"]) for v in AVL) + b"\xff"
    outputs = session.feed(stream)
    assert isinstance(outputs[0], KeepAlive) and isinstance(outputs[-1], KeepAlive)
    telemetry = outputs[1:-1]
    assert [o.ack.hex() for o in telemetry] == [v["server_reply_hex"] for v in AVL]


def test_bad_crc_is_rejected_without_ack_and_three_in_a_row_close() -> None:
    bad = next(v for v in TCP if v["expects"].get("reject"))
    session = login()
    data = bytes.fromhex(bad["hex"])
    (first,) = session.feed(data)
    assert isinstance(first, Rejected) and first.code == "bad_checksum"
    (second,) = session.feed(data)
    assert isinstance(second, Rejected)
    third, fatal = session.feed(data)
    assert isinstance(third, Rejected) and isinstance(fatal, Fatal) and fatal.code == "too_many_bad_crc"
    assert session.feed(bytes.fromhex(AVL[0]["hex"])) == []  # closed: nothing more is decoded


def test_a_good_packet_resets_the_crc_failure_count() -> None:
    bad = bytes.fromhex(next(v for v in TCP if v["expects"].get("reject"))["hex"])
    good = bytes.fromhex(AVL[0]["hex"])
    session = login()
    for _ in range(5):
        assert [type(o) for o in session.feed(bad + bad + good)] == [Rejected, Rejected, Telemetry]


@pytest.mark.parametrize("vector", AVL, ids=lambda v: v["id"])
def test_every_single_byte_corruption_gets_no_ack(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    for position in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            corrupted = bytearray(data)
            corrupted[position] ^= flip
            session = login()
            outputs = session.feed(bytes(corrupted))
            assert not any(isinstance(o, Telemetry) for o in outputs), (position, flip)
            assert all(isinstance(o, Rejected | Fatal | KeepAlive) for o in outputs)


@pytest.mark.parametrize(
    ("data", "code", "farewell"),
    [
        (b"\x00\x0e35630704244101", "bad_imei", b"\x00"),
        (b"\x00\x0f35630704244101X", "bad_imei", b"\x00"),
        (b"\x00\x00\x00\x00\x00\x00\x00\x10", "no_login", b""),
        (b"\x12\x34", "bad_imei", b"\x00"),
    ],
)
def test_bad_logins_are_refused(data: bytes, code: str, farewell: bytes) -> None:
    (out,) = TeltonikaSession().feed(data)
    assert isinstance(out, Fatal) and out.code == code and out.farewell == farewell


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (imei_packet(IMEI), "bad_preamble"),  # a second IMEI packet
        (b"\x00\x00\x7f\xff\xff\xff\x08\x01", "bad_preamble"),
        (b"\x00\x00\x00\x00\x7f\xff\xff\xff", "too_large"),  # closed from the header, nothing buffered
        (b"\x00\x00\x00\x00\x00\x00\x00\x02", "bad_length"),
    ],
)
def test_framing_errors_after_login_are_fatal(data: bytes, code: str) -> None:
    session = login()
    (out,) = session.feed(data)
    assert isinstance(out, Fatal) and out.code == code and session.buffered == 0


def test_unknown_codec_with_a_valid_crc_is_rejected() -> None:
    body = bytes((0x99, 1, 0, 1))
    frame = b"\x00\x00\x00\x00" + len(body).to_bytes(4, "big") + body + crc16_arc(body).to_bytes(4, "big")
    (out,) = login().feed(frame)
    assert isinstance(out, Rejected) and out.code == "unsupported"


def test_counts_that_disagree_are_rejected() -> None:
    record = encode_record(CODEC_8, timestamp_ms=1_700_000_000_000, io=[(1, 1, 1)])
    body = bytes((CODEC_8, 2)) + record + b"\x02"  # says 2 records, carries 1
    frame = b"\x00\x00\x00\x00" + len(body).to_bytes(4, "big") + body + crc16_arc(body).to_bytes(4, "big")
    (out,) = login().feed(frame)
    assert isinstance(out, Rejected) and out.code == "bad_format"


@pytest.mark.parametrize("vector", [v for v in TCP if v["kind"] == "response"], ids=lambda v: v["id"])
def test_command_answers_get_no_ack(vector: dict[str, Any]) -> None:
    session = login(vector["session_imei"])
    (out,) = session.feed(bytes.fromhex(vector["hex"]))
    assert isinstance(out, CommandAnswer) and not out.failed
    assert out.text == vector["expects"]["text"]


def test_codec13_is_recognised_and_ignored() -> None:
    (out,) = login().feed(encode_message(b"\x5f\x00\x00\x00hello", codec=0x0D, kind=0x06))
    assert isinstance(out, Ignored) and out.kind == "codec13"


@pytest.mark.parametrize(
    "vector", [v for v in TCP if v["kind"] == "command" and v["codec"] == 12], ids=lambda v: v["id"]
)
def test_command_frames_are_exact(vector: dict[str, Any]) -> None:
    expects = vector["expects"]
    if "text" in expects:
        assert command_bytes(CustomCommand(expects["text"])).hex() == expects["server_must_emit_exactly"]
    assert encode_message(bytes.fromhex(expects["payload_hex"])).hex() == expects["server_must_emit_exactly"]


def test_typed_commands() -> None:
    assert command_bytes(OutputCommand(1, True)).hex() == (
        "00000000000000130c01050000000b7365746469676f7574203101000087a2"
    )
    assert command_bytes(OutputCommand(1, False)).hex() == (
        "00000000000000130c01050000000b7365746469676f7574203001000017a3"
    )
    assert b"setdigout ??1" in command_bytes(OutputCommand(3, True))
    assert b"getgps" in command_bytes(RequestPosition())
    assert b"cpureset" in command_bytes(Reboot())
    with pytest.raises(UnsupportedCommand):
        command_bytes(ResendArchive(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)))
    with pytest.raises(UnsupportedCommand):
        command_bytes(OutputCommand(9, True))


def test_io_document_is_generated_from_the_table() -> None:
    assert (REPO / "docs" / "teltonika_io.md").read_text(encoding="utf-8") == docgen.render()


def test_rows_apply_the_io_table_and_map_can_signals() -> None:
    received = datetime(2026, 12, 1, tzinfo=UTC)
    record = encode_record(
        CODEC_8E,
        timestamp_ms=1_764_547_200_000,
        priority=2,
        latitude=54.6,
        longitude=25.2,
        satellites=9,
        speed=50,
        angle=90,
        event_id=247,
        io=[
            (66, 2, 24_080),
            (17, 2, 0xFFF6),
            (85, 2, 1450),
            (87, 4, 123_456_000),
            (90, 2, 0x1100),
            (72, 4, 3000),
            (182, 2, 9),
            (247, 1, 1),
            (256, 0, b"WVWZZZ1JZXW000001"),
            (9999, 4, 5),
        ],
    )
    (telemetry,) = login().feed(avl_packet(CODEC_8E, [record]))
    assert isinstance(telemetry, Telemetry)
    out = TeltonikaRows().telemetry(7, telemetry, received)
    (position,) = out.positions
    attributes = json.loads(position.attributes)
    assert attributes["external_voltage"] == 24.08 and attributes["axis_x"] == -10
    assert attributes["dallas_temperature_1"] is None and attributes["dallas_temperature_1_error"] == 3000
    assert attributes["vin_obd"] == "WVWZZZ1JZXW000001" and attributes["io9999"] == 5
    assert position.hdop == pytest.approx(0.9) and position.valid and position.event_code == 247
    assert position.record_index == telemetry.records[0].fingerprint
    (reading,) = out.can  # the record's CAN signals: one can_data row, linked to its position
    assert reading.record_index == position.record_index and reading.frame == ""
    stored = json.loads(reading.signals)
    signals = {(s["name"], s.get("value"), s.get("unit")) for s in stored}
    assert ("engine_speed", 1450.0, "rpm") in signals
    assert ("vehicle_distance", 123456.0, "km") in signals
    assert ("driver_door_open", 1.0, None) in signals and ("hood_open", 1.0, None) in signals
    assert all(s["source"].startswith("TELTONIKA:IO") for s in stored)
    (event,) = out.events
    assert event.event_type == "alarm" and event.description == "crash_detection"


def test_rows_of_records_without_fix_or_clock() -> None:
    record = encode_record(CODEC_8, timestamp_ms=1_072_915_200_000)  # 2004-01-01: RTC not set, no fix
    (telemetry,) = login().feed(avl_packet(CODEC_8, [record]))
    (position,) = TeltonikaRows().telemetry(1, telemetry, datetime.now(UTC)).positions
    assert position.latitude is None and position.longitude is None and not position.valid
    assert position.fix_time is None and json.loads(position.attributes)["time_valid"] is False


# --- round trips through the encoder --------------------------------------------------------------------------

_WIDTH_MAX = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 2**64 - 1}


@st.composite
def records(draw: st.DrawFn, codec: int) -> dict[str, Any]:
    max_id = 0xFF if codec == CODEC_8 else 0xFFFF
    widths = [1, 2, 4, 8] + ([0] if codec == CODEC_8E else [])
    elements = draw(
        st.lists(
            st.sampled_from(widths).flatmap(
                lambda w: st.tuples(
                    st.integers(0, max_id),
                    st.just(w),
                    st.binary(max_size=40) if w == 0 else st.integers(0, _WIDTH_MAX[w]),
                )
            ),
            max_size=12 if codec != CODEC_8E else 20,
        )
    )
    return {
        "timestamp_ms": draw(st.integers(0, 2**63 - 1)),
        "priority": draw(st.integers(0, 255)),
        "longitude": draw(st.integers(-1_800_000_000, 1_800_000_000)) / 1e7,
        "latitude": draw(st.integers(-900_000_000, 900_000_000)) / 1e7,
        "altitude": draw(st.integers(-32768, 32767)),
        "angle": draw(st.integers(0, 0xFFFF)),
        "satellites": draw(st.integers(0, 255)),
        "speed": draw(st.integers(0, 0xFFFF)),
        "event_id": draw(st.integers(0, max_id)),
        "generation_type": draw(st.integers(0, 255)),
        "io": elements,
    }


def _group_order(elements: list[tuple[int, int, Any]]) -> list[tuple[int, Any]]:
    """The wire order: grouped by width 1, 2, 4, 8, then NX."""
    return [(e, v) for width in (1, 2, 4, 8, 0) for e, w, v in elements if w == width]


@pytest.mark.parametrize("codec", [CODEC_8, CODEC_8E, CODEC_16])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip(codec: int, data: st.DataObject) -> None:
    wanted = data.draw(st.lists(records(codec), min_size=1, max_size=5))
    packet = avl_packet(codec, [encode_record(codec, **record) for record in wanted])
    session = login()
    split = data.draw(st.integers(0, len(packet)))
    outputs = session.feed(packet[:split]) + session.feed(packet[split:])
    (out,) = outputs
    assert isinstance(out, Telemetry) and out.ack == len(wanted).to_bytes(4, "big")
    for record, want in zip(out.records, wanted, strict=True):
        assert record.timestamp_ms == want["timestamp_ms"] and record.priority == want["priority"]
        assert record.latitude == pytest.approx(want["latitude"]) and record.longitude == pytest.approx(
            want["longitude"]
        )
        assert (record.altitude, record.angle, record.satellites, record.speed, record.event_id) == (
            want["altitude"],
            want["angle"],
            want["satellites"],
            want["speed"],
            want["event_id"],
        )
        assert record.generation_type == (want["generation_type"] if codec == CODEC_16 else None)
        assert list(record.io) == _group_order(want["io"])
    answer = session.feed(response("ok"))
    assert isinstance(answer[0], CommandAnswer) and answer[0].text == "ok"


def test_can_elements_use_documented_canonical_names() -> None:
    """Every canonical signal a Teltonika element maps to is one docs/can.md defines, and is listed there."""
    from fleet.protocol.teltonika import IO_ELEMENTS

    text = (REPO / "docs" / "can.md").read_text(encoding="utf-8")
    canonical, teltonika = (
        text.split("## Teltonika IO elements")[0],
        text.split("## Teltonika IO elements")[1],
    )
    for spec in IO_ELEMENTS.values():
        names = [spec.can[0]] if spec.can else [name for _, name in spec.can_bits]
        for name in names:
            assert f"`{name}`" in canonical, name
            assert f"`{name}`" in teltonika and f"| {spec.id} |" in teltonika, (spec.id, name)
