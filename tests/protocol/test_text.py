"""The seed-000 text dialect and per-connection dialect detection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet.protocol.navtelecom import (
    CanFrame,
    DeviceSession,
    Dialect,
    Fatal,
    FatalCode,
    NavtelecomSession,
    RejectCode,
    Rejected,
    Telemetry,
    TelemetryKind,
    TextEvent,
    TextPosition,
    TextSession,
    detect_dialect,
    handshake,
)

IMEI = "123456789012345"
POSITION = f"~A{IMEI},1700000000,55.7558,-37.6176,60.5,90.0,9,1.2~".encode()
CAN = f"~T{IMEI},7E8,02,01,0c,00,00,00,00,00~".encode()
CAN_EXT = f"~X{IMEI},18FEF100,FF,FF,00,10~".encode()
EVENT = f"~E{IMEI},12,1700000005,door opened, rear~".encode()
STREAM = POSITION + b"\r\n" + CAN + CAN_EXT + b"\n" + EVENT


@pytest.mark.parametrize(
    ("first", "dialect"),
    [
        (b"", None),
        (b"~", None),
        (b"~A", None),
        (b"~A1", Dialect.TEXT),
        (b"~T9", Dialect.TEXT),
        (b"~X0", Dialect.TEXT),
        (b"~E5", Dialect.TEXT),
        (b"~A\x01", Dialect.NTCB),
        (b"~Q1", Dialect.NTCB),
        (b"@NT", Dialect.NTCB),
        (b"@", Dialect.NTCB),
        (b"\x7f", Dialect.NTCB),
        (b"~a1", Dialect.NTCB),
    ],
)
def test_detect_dialect(first: bytes, dialect: Dialect | None) -> None:
    assert detect_dialect(first) == dialect


def test_valid_frames_and_exact_acks() -> None:
    outputs = TextSession().feed(STREAM)
    assert all(isinstance(out, Telemetry) for out in outputs)
    position, can, can_ext, event = outputs
    assert position.kind is TelemetryKind.TEXT_POSITION and position.ack == f"~AACK,{IMEI}~".encode()
    assert position.records == [
        TextPosition(IMEI, datetime.fromtimestamp(1700000000, UTC), 55.7558, -37.6176, 60.5, 90.0, 9, 1.2)
    ]
    assert can.kind is TelemetryKind.TEXT_CAN and can.ack == f"~TACK,{IMEI}~".encode()
    assert can.records == [CanFrame(0x7E8, bytes.fromhex("02010c0000000000"), False, None)]
    assert can_ext.kind is TelemetryKind.TEXT_CAN_EXTENDED and can_ext.ack == f"~XACK,{IMEI}~".encode()
    assert can_ext.records == [CanFrame(0x18FEF100, b"\xff\xff\x00\x10", True, None)]
    assert event.ack == f"~EACK,{IMEI}~".encode()
    assert event.records == [
        TextEvent(IMEI, 12, datetime.fromtimestamp(1700000005, UTC), "door opened, rear")
    ]
    assert [out.raw for out in outputs] == [POSITION, CAN, CAN_EXT, EVENT]


def test_byte_by_byte_and_one_read_agree() -> None:
    whole = TextSession().feed(STREAM)
    session = TextSession()
    by_byte = [out for i in range(len(STREAM)) for out in session.feed(STREAM[i : i + 1])]
    assert by_byte == whole
    assert session.imei == IMEI and session.buffered == 0


@pytest.mark.parametrize(
    "frame",
    [
        f"~A{IMEI},1700000000,90.5,37.6,60,90,9,1.2~",  # latitude out of range
        f"~A{IMEI},1700000000,55.7,-180.01,60,90,9,1.2~",  # longitude out of range
        f"~A{IMEI},1700000000,nan,37.6,60,90,9,1.2~",
        f"~A{IMEI},1700000000,1e3,37.6,60,90,9,1.2~",
        f"~A{IMEI},17000000000,55.7,37.6,60,90,9,1.2~",  # year 2508
        f"~A{IMEI},946684799,55.7,37.6,60,90,9,1.2~",  # before 2000
        f"~A{IMEI},1700000000,55.7,37.6,-1,90,9,1.2~",
        f"~A{IMEI},1700000000,55.7,37.6,60,361,9,1.2~",
        f"~A{IMEI},1700000000,55.7,37.6,60,90,9~",  # a value missing
        f"~A{IMEI},1700000000,55.7,37.6,60,90,9,1.2,7~",  # one too many
        "~A12345678901234X,1700000000,55.7,37.6,60,90,9,1.2~",
        "~A1234567890123,1700000000,55.7,37.6,60,90,9,1.2~",
        f"~T{IMEI},20000000,01~",  # over 29 bits
        f"~X{IMEI},20000000,01~",  # 29-bit id overflow
        f"~T{IMEI},7E8,1,02~",  # one hex digit
        f"~T{IMEI},7E8,0G~",
        f"~T{IMEI},7E8,01,02,03,04,05,06,07,08,09~",  # nine bytes
        f"~T{IMEI},7E8~",  # no data
        f"~E{IMEI},70000,1700000000,x~",
        f"~E{IMEI},1,1700000000~",
        f"~A{IMEI},1700000000,55.7,37.6,60,90,9,1.2\x01~",
    ],
)
def test_invalid_frames_are_rejected_whole(frame: str) -> None:
    session = TextSession()
    (out,) = session.feed(frame.encode("latin-1"))
    assert isinstance(out, Rejected) and out.code is RejectCode.BAD_FORMAT, out
    assert session.imei is None  # nothing was accepted
    assert isinstance(session.feed(POSITION)[0], Telemetry)  # and the connection goes on


def test_a_connection_keeps_one_imei() -> None:
    other = POSITION.replace(IMEI.encode(), b"123456789012346")
    outputs = TextSession().feed(POSITION + other)
    assert outputs[1].code is RejectCode.IMEI_MISMATCH


def test_unknown_text_frame_type() -> None:
    (out,) = TextSession().feed(f"~Q{IMEI}~".encode())
    assert out.code is RejectCode.UNKNOWN_MESSAGE


def test_length_cap_without_closing_tilde_is_fatal() -> None:
    session = TextSession()
    assert session.feed(b"~A" + b"1" * 509) == []  # 511 bytes: could still close at 512
    (fatal,) = session.feed(b"1")
    assert isinstance(fatal, Fatal) and fatal.code is FatalCode.TOO_LARGE
    assert session.feed(POSITION) == [] and session.buffered == 0


def test_garbage_between_frames_is_fatal() -> None:
    outputs = TextSession().feed(POSITION + b"x" + POSITION)
    assert isinstance(outputs[0], Telemetry) and outputs[1].code is FatalCode.BAD_START and len(outputs) == 2


def test_device_session_picks_the_dialect() -> None:
    text = DeviceSession()
    assert text.feed(STREAM[:2]) == [] and text.dialect is None
    assert len(text.feed(STREAM[2:])) == 4 and text.dialect is Dialect.TEXT and text.imei == IMEI
    ntcb = DeviceSession()
    (reply,) = ntcb.feed(handshake(IMEI))
    assert ntcb.dialect is Dialect.NTCB and ntcb.imei == IMEI and reply.data.endswith(b"*<S")
    assert isinstance(ntcb.session, NavtelecomSession)


def test_text_dialect_can_be_disabled() -> None:
    session = DeviceSession(allow_text=False)
    (fatal,) = session.feed(POSITION)
    assert session.dialect is Dialect.NTCB and fatal.code is FatalCode.NOT_NEGOTIATED
    assert session.fatal is fatal


def test_wide_can_id_on_t_frame_is_taken_as_extended() -> None:
    session = TextSession()
    (out,) = session.feed(f"~T{IMEI},18FEF100,FF,FF,00,10~".encode())
    assert out.ack == f"~TACK,{IMEI}~".encode()
    assert out.records == [CanFrame(0x18FEF100, b"\xff\xff\x00\x10", True, None)]
