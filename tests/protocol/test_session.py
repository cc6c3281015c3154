"""The per-connection state machine: negotiation answers, rejections, fatal errors, caps, commands, redecode."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from fleet.protocol.navtelecom import (
    CommandAnswer,
    DeviceVersion,
    Fatal,
    FatalCode,
    KeepAlive,
    NavtelecomSession,
    Negotiation,
    RejectCode,
    Rejected,
    Reply,
    ReplyKind,
    SessionState,
    Telemetry,
    archive,
    build_record,
    command,
    command_set_outputs,
    command_sync,
    current,
    decode_frame,
    device_answer,
    event,
    flex_negotiation,
    handshake,
    layout_for_fields,
    query_state,
    query_version,
)
from fleet.protocol.navtelecom.framing import MAX_FRAME_BYTES
from fleet.protocol.navtelecom.ntcb import build_packet, parse_header
from fleet.protocol.navtelecom.session import answer_version

IMEI = "861785005205079"
FIELDS = (1, 2, 3, 8, 9, 10, 11, 13, 19)
LAYOUT = layout_for_fields(FIELDS)
WHEN = datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC)
RECORD = build_record(
    LAYOUT,
    index=7,
    event_code=0x1705,
    device_time=WHEN,
    fix_time=WHEN,
    valid=True,
    satellites=9,
    latitude=56.33996,
    longitude=43.80762,
    speed_kmh=12.5,
    power_v=12.3,
)


def negotiated(version: int = 20) -> tuple[NavtelecomSession, list[object]]:
    session = NavtelecomSession()
    outputs = session.feed(handshake(IMEI) + flex_negotiation(FIELDS, version=version))
    return session, outputs


def negotiation_reply(protocol: int, struct: int) -> bytes:
    return b"*<FLEX\xb0" + bytes((protocol, struct))


def test_states_and_exposed_values() -> None:
    session = NavtelecomSession()
    assert session.state is SessionState.AWAIT_HANDSHAKE
    session.feed(handshake(IMEI, device_id=0x7B))
    assert session.state is SessionState.IDENTIFIED
    assert (session.imei, session.device_id, session.server_id) == (IMEI, 0x7B, 1)
    session.feed(flex_negotiation(FIELDS, version=20, device_id=0x7B))
    assert session.state is SessionState.NEGOTIATED
    assert session.negotiation == Negotiation(20, 20, 122, session.mask or b"", 2)
    assert session.layout == LAYOUT and session.negotiation.layout is session.layout
    session.feed(b"\x00")
    assert session.state is SessionState.CLOSED


@pytest.mark.parametrize(
    ("requested", "answered"),
    [
        ((10, 10), (10, 10)),
        ((20, 20), (20, 20)),
        ((30, 30), (30, 30)),
        ((10, 20), (10, 20)),
        ((0x28, 0x28), (30, 30)),
        ((0x0F, 0x19), (10, 20)),
        ((0xFF, 30), (30, 30)),
    ],
)
def test_negotiation_answers(requested: tuple[int, int], answered: tuple[int, int]) -> None:
    session = NavtelecomSession()
    session.feed(handshake(IMEI))
    (reply,) = session.feed(
        flex_negotiation(FIELDS, version=requested[0], struct_version=requested[1], bit_count=122)
    )
    assert isinstance(reply, Reply) and reply.kind is ReplyKind.NEGOTIATION
    assert reply.data[16:] == negotiation_reply(*answered)
    header = parse_header(reply.data)
    assert (header.receiver_id, header.sender_id) == (0, 1)
    accepted = requested == answered
    assert (session.layout is not None) is accepted


def test_downgrade_then_renegotiation() -> None:
    session = NavtelecomSession()
    session.feed(handshake(IMEI))
    (first,) = session.feed(flex_negotiation(FIELDS, version=0x28, bit_count=255))
    assert first.data[16:] == negotiation_reply(30, 30)
    assert session.layout is None
    (second,) = session.feed(flex_negotiation(FIELDS, version=30))
    assert second.data[16:] == negotiation_reply(30, 30)
    assert session.layout == LAYOUT
    (telemetry,) = session.feed(archive([RECORD]))
    assert isinstance(telemetry, Telemetry)


def test_answer_version() -> None:
    assert [answer_version(v) for v in (5, 10, 11, 20, 29, 30, 31, 255)] == [None, 10, 10, 20, 20, 30, 30, 30]


def test_telemetry_values_and_acks() -> None:
    session, _ = negotiated()
    outputs = session.feed(archive([RECORD, RECORD]) + event(99, RECORD) + current(RECORD) + b"\x7f")
    a, t, c, ping = outputs
    assert a.ack == b"~A\x02" + a.ack[3:] and len(a.records) == 2
    assert t.ack == b"~Tc\x00\x00\x00" + t.ack[6:] and t.event_index == 99
    assert c.ack == bytes.fromhex("7e43b9")
    assert isinstance(ping, KeepAlive)
    record = a.records[0]
    assert (record.index, record.event_code, record.device_time, record.fix_time) == (7, 0x1705, WHEN, WHEN)
    assert record.valid and record.satellites == 9
    assert record.latitude == pytest.approx(56.33996, abs=1e-6)
    assert record.speed_kmh == 12.5 and record.power_v == 12.3
    assert record.altitude_m is None and record.hdop is None and record.inputs is None
    assert record.as_dict()["latitude"] == record.latitude


def test_event_ack_uses_the_frame_index_even_without_field_1() -> None:
    layout = layout_for_fields((2, 3))
    session = NavtelecomSession()
    session.feed(handshake(IMEI) + flex_negotiation((2, 3), version=10))
    (out,) = session.feed(event(0x0D, build_record(layout, event_code=1)))
    assert out.ack == bytes.fromhex("7e540d00000090")
    assert out.records[0].index is None


def test_bad_checksums_get_no_reply_and_the_stream_goes_on() -> None:
    session, _ = negotiated()
    bad_flex = bytearray(archive([RECORD]))
    bad_flex[5] ^= 0x20
    bad_ntcb = bytearray(device_answer("*@SETOUT OK,1Y"))
    bad_ntcb[-1] ^= 0x20
    outputs = session.feed(bytes(bad_flex) + bytes(bad_ntcb) + archive([RECORD]))
    assert [type(out) for out in outputs] == [Rejected, Rejected, Telemetry]
    assert outputs[0].code is RejectCode.BAD_CHECKSUM and outputs[0].raw == bytes(bad_flex)
    assert outputs[1].code is RejectCode.BAD_CHECKSUM and outputs[1].raw == bytes(bad_ntcb)
    assert session.fatal is None


def test_fatal_errors_close_the_session() -> None:
    session, _ = negotiated()
    outputs = session.feed(b"~Z\x00\x00" + archive([RECORD]))
    assert len(outputs) == 1 and isinstance(outputs[0], Fatal)
    assert outputs[0].code is FatalCode.UNKNOWN_FLEX_TYPE and outputs[0].excerpt.startswith(b"~Z")
    assert session.feed(archive([RECORD])) == []
    assert session.state is SessionState.CLOSED


def test_flex_before_negotiation_is_fatal() -> None:
    session = NavtelecomSession()
    session.feed(handshake(IMEI))
    (fatal,) = session.feed(b"~")
    assert fatal.code is FatalCode.NOT_NEGOTIATED


def test_header_checksum_error_is_fatal_because_the_length_is_untrusted() -> None:
    packet = bytearray(handshake(IMEI))
    packet[12] ^= 0x01  # a corrupted length byte
    (fatal,) = NavtelecomSession().feed(bytes(packet))
    assert fatal.code is FatalCode.BAD_HEADER


def test_frame_caps() -> None:
    # An NTCB header announcing more than the cap is refused from the header alone.
    session = NavtelecomSession(max_frame_bytes=1000)
    (fatal,) = session.feed(build_packet(b"x" * 2000, 1, 0)[:16])
    assert fatal.code is FatalCode.TOO_LARGE
    # A ~A whose count x record size exceeds the cap, likewise, before any record byte arrives.
    full = tuple(range(1, 256))
    session = NavtelecomSession()
    session.feed(handshake(IMEI) + flex_negotiation(full, version=30))
    (fatal,) = session.feed(b"~A\x5a")
    assert fatal.code is FatalCode.TOO_LARGE
    # Within the cap, a partial frame is buffered and nothing more.
    session = NavtelecomSession()
    session.feed(handshake(IMEI) + flex_negotiation(full, version=30))
    frame = archive([bytes(734)] * 80)
    assert session.feed(frame[:-1]) == [] and session.buffered == len(frame) - 1 <= MAX_FRAME_BYTES
    assert isinstance(session.feed(frame[-1:])[0], Telemetry)
    assert session.buffered == 0


def test_keepalives() -> None:
    session = NavtelecomSession()
    assert [type(out) for out in session.feed(b"\x7f" + build_packet(b"", 1, 0))] == [KeepAlive, KeepAlive]


def test_unknown_and_unsupported_ntcb_messages_are_reported_not_answered() -> None:
    session, _ = negotiated()
    outputs = session.feed(
        device_answer(b"*>TMKEY\x01\x02") + device_answer(b"*>CODE\x01") + device_answer(b"*>U2S")
    )
    assert [out.code for out in outputs] == [
        RejectCode.UNKNOWN_MESSAGE,
        RejectCode.UNSUPPORTED,
        RejectCode.UNKNOWN_MESSAGE,
    ]


def test_command_answers() -> None:
    session, _ = negotiated()
    outputs = session.feed(
        device_answer("*@SETOUT OK,1Y")
        + device_answer(b"*#V:S-2421:02.00.80:31.10.24:RU\x00")
        + device_answer(b"*@C" + RECORD)
        + device_answer("*@CNCT_DRC OK")
        + device_answer(b"*#A" + RECORD)
        + device_answer(b"*#A\x0b\x1e" + LAYOUT.mask(255) + RECORD)
    )
    assert all(isinstance(out, CommandAnswer) for out in outputs)
    text, version, sync, connect, state, state_with_mask = outputs
    assert text.text == "*@SETOUT OK,1Y" and text.record is None
    assert version.version == DeviceVersion("S-2421", "02.00.80", "31.10.24", "RU")
    assert sync.text == "*@C" and sync.record is not None and sync.record.index == 7
    assert connect.text == "*@CNCT_DRC OK" and connect.record is None
    assert state.record == sync.record
    assert state_with_mask.record is not None and state_with_mask.record.fields == sync.record.fields


def test_command_answers_before_negotiation_keep_binary_as_text() -> None:
    (answer,) = NavtelecomSession().feed(device_answer(b"*@C\x01\x02\xff"))
    assert answer.record is None and answer.text == "*@C\\x01\\x02\\xff"


def test_commands_are_addressed_to_the_device() -> None:
    assert command("*!SETOUT 1Y").hex() == "404e544300000000010000000b004f5c2a215345544f5554203159"
    assert command_set_outputs({1: True}) == command("*!SETOUT 1Y")
    assert command_set_outputs({2: False, 1: True})[16:] == b"*!SETOUT 1Y,2N"
    assert command_sync(501475)[16:] == b"*!SYNC:501475"
    assert query_version()[16:] == b"*?V" and query_state()[16:] == b"*?A"
    with pytest.raises(ValueError):
        command("SETOUT 1Y")
    session = NavtelecomSession()
    session.feed(handshake(IMEI, device_id=0x02F6B5C9))
    header = parse_header(session.command("*?V"))
    assert (header.receiver_id, header.sender_id) == (0x02F6B5C9, 1)


def test_second_handshake_with_another_identity_resets_the_negotiation() -> None:
    session, _ = negotiated()
    (same,) = session.feed(handshake(IMEI))
    assert isinstance(same, Reply) and session.layout is not None
    session.feed(handshake("861785005126069"))
    assert session.imei == "861785005126069" and session.layout is None


def test_field_100_size_is_configurable() -> None:
    fields = (1, 99, 100, 101)
    for size, record_size in ((2, 8), (1, 7)):
        session = NavtelecomSession(field100_size=size)
        session.feed(handshake(IMEI) + flex_negotiation(fields, version=20))
        assert session.layout is not None and session.layout.size == record_size
        assert session.negotiation is not None and session.negotiation.field100_size == size


def test_decode_frame_redecodes_stored_frames() -> None:
    session, _ = negotiated()
    frame = archive([RECORD])
    (live,) = session.feed(frame)
    assert session.negotiation is not None
    stored = Negotiation(
        session.negotiation.protocol_version,
        session.negotiation.struct_version,
        session.negotiation.bit_count,
        session.negotiation.mask,
    )
    assert decode_frame(frame, stored) == live
    assert decode_frame(frame, session.negotiation.mask, bit_count=122) == live
    assert decode_frame(frame, session.negotiation.mask) == live  # the unused mask bits are zero
    assert decode_frame(handshake(IMEI)).kind is ReplyKind.HANDSHAKE
    assert decode_frame(frame[:-1], stored).code is RejectCode.TRUNCATED
    assert decode_frame(frame + frame, stored).code is RejectCode.BAD_FORMAT
    assert decode_frame(frame).code is FatalCode.NOT_NEGOTIATED
    assert decode_frame(frame + b"\x00", stored).code is FatalCode.BAD_START


def test_restore_resumes_a_connection() -> None:
    session, _ = negotiated()
    assert session.negotiation is not None
    resumed = NavtelecomSession.restore(session.negotiation, imei=IMEI, device_id=5)
    assert resumed.state is SessionState.NEGOTIATED and resumed.imei == IMEI
    assert resumed.feed(current(RECORD)) == session.feed(current(RECORD))


def test_outputs_survive_pickling() -> None:
    """Listeners may hand decoded frames to worker processes."""
    session, _ = negotiated()
    (out,) = session.feed(archive([RECORD, RECORD]))
    copy = pickle.loads(pickle.dumps(out))
    assert copy == out and copy.records[0].layout is out.records[0].layout
    assert copy.records[0].as_dict() == out.records[0].as_dict()
