"""The PROXY protocol header parser (pure), and the listener's use of it with a real ingest service."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from fleet.ingest import IngestService
from fleet.ingest.proxy_protocol import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    encode_v2,
    looks_like_header,
    parse,
)

from .conftest import StartIngest, Tracker, unique_imei

V4 = encode_v2(("203.0.113.7", 40001), ("10.0.0.2", 5221))
V6 = encode_v2(("2001:db8::42", 40002), ("2001:db8::1", 5221))


# --- the parser ---------------------------------------------------------------------------------------------
def test_v2_ipv4() -> None:
    header = parse(V4 + b"@NTC")
    assert header == ProxyHeader(28, ("203.0.113.7", 40001), ("10.0.0.2", 5221))
    assert header is not None and header.peer == "203.0.113.7:40001"


def test_v2_ipv6() -> None:
    header = parse(V6)
    assert header is not None
    assert header.length == 16 + 36
    assert header.source == ("2001:db8::42", 40002)
    assert header.peer == "[2001:db8::42]:40002"


def test_v2_local_command_names_no_peer() -> None:
    header = parse(encode_v2(None) + b"rest")
    assert header == ProxyHeader(16, None)
    assert header.peer is None


def test_v2_tlvs_after_the_addresses_are_skipped() -> None:
    tlv = b"\x04\x00\x03abc"  # a NOOP TLV, as HAProxy may add
    data = bytearray(V4)
    data[14:16] = (12 + len(tlv)).to_bytes(2, "big")
    header = parse(bytes(data) + tlv + b"DEVICE")
    assert header is not None and header.length == len(V4) + len(tlv)
    assert header.source == ("203.0.113.7", 40001)


def test_split_across_reads_needs_more_bytes_until_whole() -> None:
    for cut in range(len(V4)):
        assert parse(V4[:cut]) is None, cut
    assert parse(V4) is not None
    for cut in range(len(V6)):
        assert parse(V6[:cut]) is None, cut


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"@NTC\x01\x00\x00\x00", "signature"),
        (b"\x00\x0f358480081523995", "signature"),
        (b"\r\n\r\n\x00\r\nQUIT\r", "signature"),  # the last signature byte differs
        (V2_SIGNATURE + b"\x11\x11\x00\x0c", "version"),  # version 1 in a v2 header
        (V2_SIGNATURE + b"\x22\x11\x00\x0c", "command"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4, "too short"),
        (V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\x00" * 12, "family"),  # UDP
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "limit"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed"),
        (b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "family"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", "family"),
        (b"PROXY " + b"x" * 120, "longer"),
        (b"PROXI TCP4", "signature"),
    ],
)
def test_invalid_headers_are_refused_early(data: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message):
        parse(data)


def test_wrong_signature_is_seen_on_the_first_differing_byte() -> None:
    with pytest.raises(ProxyHeaderError):
        parse(b"\r\n\r\n\x01")


def test_v1_text_forms() -> None:
    line = b"PROXY TCP4 198.51.100.9 10.0.0.2 51000 5221\r\n"
    assert parse(line[:20]) is None
    header = parse(line + b"@NTC")
    assert header == ProxyHeader(len(line), ("198.51.100.9", 51000), ("10.0.0.2", 5221), version=1)
    six = parse(b"PROXY TCP6 2001:db8::9 2001:db8::1 51000 5221\r\n")
    assert six is not None and six.peer == "[2001:db8::9]:51000"
    unknown = parse(b"PROXY UNKNOWN\r\n")
    assert unknown is not None and unknown.source is None


def test_looks_like_header() -> None:
    assert looks_like_header(V4)
    assert looks_like_header(b"PROXY TCP4 ...")
    assert not looks_like_header(b"@NTC")
    assert not looks_like_header(b"\x00\x0f3584")


# --- the listener ------------------------------------------------------------------------------------------------
async def _connect(service: IngestService) -> Tracker:
    return await Tracker.connect(service.ports["navtelecom"])


async def test_required_header_names_the_stored_peer(
    start_ingest: StartIngest, owner_conn: asyncpg.Connection
) -> None:
    service = await start_ingest(ingest_proxy_protocol=True)
    imei = unique_imei()
    client = await _connect(service)
    # The header arrives in two reads, the login right behind it in the second.
    client.writer.write(V4[:9])
    await client.writer.drain()
    await asyncio.sleep(0.05)
    client.writer.write(V4[9:])
    await client.login(imei)
    await client.close()
    for _ in range(50):
        peer = await owner_conn.fetchval("SELECT last_peer FROM devices WHERE imei = $1", imei)
        if peer:
            break
        await asyncio.sleep(0.1)
    assert peer == "203.0.113.7:40001"


async def test_missing_or_unexpected_header_is_refused_and_counted(
    start_ingest: StartIngest,
) -> None:
    required = await start_ingest(ingest_proxy_protocol=True)
    raw = await _connect(required)
    raw.writer.write(b"@NTC" + b"\x00" * 12)
    assert await raw.closed_within(5)
    await raw.close()
    assert required.stats.connections_refused["proxy_header_invalid"] == 1

    plain = await start_ingest()
    proxied = await _connect(plain)
    proxied.writer.write(V4 + b"@NTC")
    assert await proxied.closed_within(5)
    await proxied.close()
    assert plain.stats.connections_refused["proxy_header_unexpected"] == 1


async def test_untrusted_balancer_is_refused_before_reading(
    start_ingest: StartIngest,
) -> None:
    service = await start_ingest(ingest_proxy_protocol=True, ingest_proxy_trusted_cidrs=["192.0.2.0/24"])
    client = await _connect(service)
    assert await client.closed_within(5)
    await client.close()
    refused: dict[str, Any] = service.stats.connections_refused
    assert refused["proxy_source_untrusted"] == 1


def test_settings_from_environment_and_yaml(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.config import Settings, flatten_yaml

    monkeypatch.setenv("INGEST_PROXY_PROTOCOL", "1")
    monkeypatch.setenv("INGEST_PROXY_TRUSTED_CIDRS", "10.0.1.10/24, 2001:db8::1")
    settings = Settings(data_dir=tmp_path)
    assert settings.ingest_proxy_protocol is True
    assert settings.ingest_proxy_trusted_cidrs == ["10.0.1.0/24", "2001:db8::1/128"]
    flat = flatten_yaml({"ingest": {"proxy_protocol": True, "proxy_trusted_cidrs": "10.0.1.10/32"}})
    assert flat == {"ingest_proxy_protocol": True, "ingest_proxy_trusted_cidrs": "10.0.1.10/32"}
