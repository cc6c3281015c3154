"""Rebuild navtelecom_regressions.json: literal regression inputs with hand-checked expected outcomes.

Run from the repository root: ``python tests/protocol/corpus/build_corpus.py``. New cases found by fuzzing
go at the end of ``cases``; keep existing ones byte for byte.
"""

import json

from fleet.protocol.navtelecom import (
    archive,
    build_record,
    event,
    extra_archive,
    extra_event,
    extra_record,
    flex_negotiation,
    handshake,
    layout_for_fields,
)
from fleet.protocol.navtelecom.checksum import crc8
from fleet.protocol.navtelecom.ntcb import build_packet


def flex(body):
    return body + bytes((crc8(body),))


hs = handshake("123456789012345")
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
bad_csp = bytearray(hs)
bad_csp[15] ^= 0x10
bad_csd = bytearray(hs)
bad_csd[20] ^= 0x10
big_hdr = build_packet(b"x" * 60000, 1, 0)[:16]
bad_event = bytearray(event(4, record))
bad_event[-1] ^= 0x55
ex = extra_record(index=1, event_code=0x2530)
ex_bad_version = bytearray(ex)
ex_bad_version[2] = 11
ex_overrun = extra_record(index=1, event_code=0x2530, items=[(2, b"\x01" * 4)])
ex_overrun = bytearray(ex_overrun)
ex_overrun[-5] = 9  # item claims 9 bytes, 4 present
imei = "123456789012345"
cases = [
    dict(
        name="ping_then_empty_ntcb",
        session="ntcb",
        hex=(b"\x7f" + build_packet(b"", 1, 0)).hex(),
        expect=["KeepAlive", "KeepAlive"],
    ),
    dict(name="bad_preamble", session="ntcb", hex=(b"@NTX" + hs[4:]).hex(), expect=["Fatal:bad_header"]),
    dict(name="bad_header_checksum", session="ntcb", hex=bytes(bad_csp).hex(), expect=["Fatal:bad_header"]),
    dict(
        name="bad_body_checksum_then_handshake",
        session="ntcb",
        hex=(bytes(bad_csd) + hs).hex(),
        expect=["Rejected:bad_checksum", "Reply:handshake"],
    ),
    dict(
        name="flex_before_negotiation",
        session="ntcb",
        hex=(hs + b"~A\x01" + record).hex(),
        expect=["Reply:handshake", "Fatal:not_negotiated"],
    ),
    dict(
        name="unknown_flex_type",
        session="ntcb",
        fields=[1, 2, 3],
        hex=flex(b"~Q\x7b\x00").hex(),
        expect=["Fatal:unknown_flex_type"],
    ),
    dict(name="unknown_start_byte", session="ntcb", hex="0001", expect=["Fatal:bad_start"]),
    dict(name="ntcb_over_cap", session="ntcb", cap=1024, hex=big_hdr.hex(), expect=["Fatal:too_large"]),
    dict(
        name="archive_over_cap",
        session="ntcb",
        fields=list(range(1, 256)),
        hex=b"~A\xff".hex(),
        expect=["Fatal:too_large"],
    ),
    dict(
        name="unknown_and_unsupported_ntcb",
        session="ntcb",
        hex=(
            build_packet(b"*>TMKEY0102030405060708", 1, 0)
            + build_packet(b"*>CODE\x01" + bytes(16), 1, 0)
            + build_packet(b"*>T\x09abc", 1, 0)
        ).hex(),
        expect=["Rejected:unknown_message", "Rejected:unsupported", "Rejected:unknown_message"],
    ),
    dict(
        name="negotiation_unknown_version_downgrades",
        session="ntcb",
        hex=(hs + flex_negotiation((1, 2), version=0x28, bit_count=255) + b"~A").hex(),
        expect=["Reply:handshake", "Reply:negotiation", "Fatal:not_negotiated"],
    ),
    dict(
        name="negotiation_below_1_0",
        session="ntcb",
        hex=(hs + flex_negotiation((1, 2), version=5, bit_count=69)).hex(),
        expect=["Reply:handshake", "Rejected:unsupported"],
    ),
    dict(
        name="negotiation_not_flex",
        session="ntcb",
        hex=build_packet(b"*>FLEX\xb1\x0a\x0a\x45" + bytes(9), 1, 0).hex(),
        expect=["Rejected:unsupported"],
    ),
    dict(
        name="negotiation_truncated_mask",
        session="ntcb",
        hex=build_packet(b"*>FLEX\xb0\x14\x14\x7a\xff\xff\xff\xff", 1, 0).hex(),
        expect=["Rejected:bad_format"],
    ),
    dict(
        name="negotiation_empty_mask",
        session="ntcb",
        hex=build_packet(b"*>FLEX\xb0\x0a\x0a\x45" + bytes(9), 1, 0).hex(),
        expect=["Rejected:bad_format"],
    ),
    dict(
        name="archive_then_bad_crc_then_event",
        session="ntcb",
        fields=[1, 2, 3, 8, 9, 10, 11],
        hex=(archive([record]) + bytes(bad_event) + event(4, record)).hex(),
        expect=["Telemetry:A", "Rejected:bad_checksum", "Telemetry:T"],
    ),
    dict(
        name="extra_record_bad_static_version",
        session="ntcb",
        fields=[1],
        hex=extra_archive([bytes(ex_bad_version)]).hex(),
        expect=["Rejected:bad_format"],
    ),
    dict(
        name="extra_record_item_overrun",
        session="ntcb",
        fields=[1],
        hex=extra_archive([bytes(ex_overrun)]).hex(),
        expect=["Rejected:bad_format"],
    ),
    dict(
        name="extra_record_too_short",
        session="ntcb",
        fields=[1],
        hex=extra_event(1, b"\x03\x00\x0a\x25\x00").hex(),
        expect=["Rejected:bad_format"],
    ),
    dict(
        name="legacy_unknown_format",
        session="ntcb",
        hex=(hs + build_packet(b"*>A\x01\x09" + bytes(40), 1, 0)).hex(),
        expect=["Reply:handshake", "Rejected:bad_format"],
    ),
    dict(
        name="legacy_truncated",
        session="ntcb",
        hex=(hs + build_packet(b"*>T\x25\x00\x00\x00\x00", 1, 0)).hex(),
        expect=["Reply:handshake", "Rejected:bad_format"],
    ),
    dict(
        name="handshake_without_identifier",
        session="ntcb",
        hex=(build_packet(b"*>S:", 1, 0) + build_packet(b"*>S:12 34", 1, 0)).hex(),
        expect=["Rejected:bad_format", "Rejected:bad_format"],
    ),
    dict(
        name="command_answers_any_time",
        session="ntcb",
        hex=(
            build_packet(b"*@SETOUT OK,1Y", 1, 0)
            + build_packet(b"*#V:S-2421:02.00.80:31.10.24:RU\x00", 1, 0)
            + build_packet(b"*@C\xff\x00", 1, 0)
        ).hex(),
        expect=["CommandAnswer", "CommandAnswer", "CommandAnswer"],
    ),
    dict(
        name="text_valid_then_invalid",
        session="text",
        hex=(
            f"~A{imei},1700000000,55.75,37.61,10.5,90.0,8,1.2~\r\n~A{imei},1700000000,95.0,37.61,10.5,90.0,8,1.2~"
        )
        .encode()
        .hex(),
        expect=["Telemetry:text_A", "Rejected:bad_format"],
    ),
    dict(
        name="text_unterminated_over_cap",
        session="text",
        hex=(b"~A" + b"1" * 600).hex(),
        expect=["Fatal:too_large"],
    ),
    dict(
        name="text_other_imei_and_garbage",
        session="text",
        hex=(f"~E{imei},1,1700000000,door open, rear~~E123456789012346,1,1700000000,x~#").encode().hex(),
        expect=["Telemetry:text_E", "Rejected:imei_mismatch", "Fatal:bad_start"],
    ),
    dict(
        name="auto_text_disabled",
        session="auto",
        allow_text=False,
        hex=f"~A{imei},1700000000,55.75,37.61,10.5,90.0,8,1.2~".encode().hex(),
        expect=["Fatal:not_negotiated"],
    ),
    dict(
        name="auto_detects_text",
        session="auto",
        hex=f"~T{imei},7E8,02,01,0C,00,00,00,00,00~~X{imei},18FEF100,FF,FF~".encode().hex(),
        expect=["Telemetry:text_T", "Telemetry:text_X"],
    ),
    dict(name="auto_detects_ntcb", session="auto", hex=hs.hex(), expect=["Reply:handshake"]),
]
with open("tests/protocol/corpus/navtelecom_regressions.json", "w", encoding="utf-8") as out:
    json.dump(cases, out, indent=1)
    out.write("\n")
print(len(cases))
