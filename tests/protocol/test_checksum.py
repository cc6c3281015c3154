"""CRC-8 (poly 0x31, init 0xFF) and the NTCB XOR checksum."""

from __future__ import annotations

from functools import reduce
from operator import xor

from hypothesis import given
from hypothesis import strategies as st

from fleet.protocol.navtelecom.checksum import CRC8_TABLE, crc8, crc8_bytewise, xor8
from fleet.protocol.navtelecom.flex import (
    ack_archive,
    ack_current,
    ack_event,
    ack_extra_archive,
    ack_extra_event,
)

from .conftest import PROTOCOL_SETTINGS


def crc8_bitwise(data: bytes) -> int:
    """The textbook bit-by-bit definition from the spec, as an independent oracle."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def test_catalogue_check_value() -> None:
    assert crc8(b"123456789") == 0xF7


def test_table_matches_the_document() -> None:
    assert CRC8_TABLE[:16] == (
        0x00,
        0x31,
        0x62,
        0x53,
        0xC4,
        0xF5,
        0xA6,
        0x97,
        0xB9,
        0x88,
        0xDB,
        0xEA,
        0x7D,
        0x4C,
        0x1F,
        0x2E,
    )
    assert CRC8_TABLE[-4:] == (0xFF, 0xCE, 0x9D, 0xAC)


def test_reply_constants_from_the_spec() -> None:
    assert ack_archive(1).hex() == "7e4101df"
    assert ack_archive(4).hex() == "7e41042a"
    assert ack_archive(8).hex() == "7e410857"
    assert ack_current().hex() == "7e43b9"
    assert ack_extra_archive(1).hex() == "7e45015c"
    assert ack_event(4).hex() == "7e540400000017"
    assert ack_event(0x28).hex() == "7e542800000075"
    assert ack_event(0x0D).hex() == "7e540d00000090"
    assert ack_extra_event(7)[:6] == b"~X\x07\x00\x00\x00"
    assert crc8(ack_extra_event(7)) == 0


@PROTOCOL_SETTINGS
@given(st.binary(max_size=4000))
def test_folded_crc_equals_bytewise_and_bitwise(data: bytes) -> None:
    assert crc8(data) == crc8_bytewise(data) == crc8_bitwise(data)


@PROTOCOL_SETTINGS
@given(st.binary(min_size=1, max_size=3000))
def test_crc_over_frame_with_its_crc_is_zero(data: bytes) -> None:
    assert crc8(data + bytes((crc8(data),))) == 0


@PROTOCOL_SETTINGS
@given(st.binary(max_size=70000))
def test_xor8_equals_reduce(data: bytes) -> None:
    assert xor8(data) == reduce(xor, data, 0)


def test_long_inputs_around_fold_boundaries() -> None:
    for size in (47, 48, 49, 127, 128, 254, 255, 256, 1300, 8192, 65535):
        data = bytes((i * 37 + 11) & 0xFF for i in range(size))
        assert crc8(data) == crc8_bitwise(data)
        assert xor8(data) == reduce(xor, data, 0)
