"""The PROXY protocol header a TCP balancer (HAProxy ``send-proxy-v2``) puts before a device's bytes.

Behind a balancer every device connection comes from the balancer's address; the header names the real
peer. Version 2 is binary (a 12-byte signature, a version/command byte, a family byte, a 16-bit length
and the addresses); version 1 is one text line (``PROXY TCP4 src dst sport dport\\r\\n``) and costs a few
lines to accept as well. The parser is pure: bytes in, a :class:`ProxyHeader` (or "need more bytes", or
:class:`ProxyHeaderError`) out - the connection decides what to do with it.

Spec: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V2_FIXED = 16  # signature, version/command, family, length
# The header is the first thing on the connection; a v2 header carries the addresses and optional TLVs
# (HAProxy sends a few dozen bytes of them at most). Anything longer is not a balancer talking.
V2_MAX_PAYLOAD = 1024
V1_MAX_LINE = 107  # the specification's own bound for the text form, CRLF included

CMD_LOCAL = 0x0
CMD_PROXY = 0x1
FAMILY_UNSPEC = 0x00
FAMILY_TCP4 = 0x11
FAMILY_TCP6 = 0x21
_TCP4 = struct.Struct("!4s4sHH")
_TCP6 = struct.Struct("!16s16sHH")


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header (the connection must be refused)."""


class ProxyHeader(NamedTuple):
    """A parsed header: its length on the wire, and the real peer (None: LOCAL or an unknown family)."""

    length: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None = None
    version: int = 2

    @property
    def peer(self) -> str | None:
        """The real peer as ``host:port`` (``[v6]:port``), or None when the header names none."""
        if self.source is None:
            return None
        host, port = self.source
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def looks_like_header(data: bytes) -> bool:
    """True when ``data`` starts with a PROXY signature (of either version; to refuse unexpected ones)."""
    return data.startswith(V2_SIGNATURE) or data.startswith(V1_PREFIX)


def parse(data: bytes) -> ProxyHeader | None:
    """Parse the header at the start of ``data``; None when more bytes are needed.

    Raises :class:`ProxyHeaderError` as soon as the bytes cannot be a header (a wrong signature is
    recognised on its first differing byte, so a device talking straight to the port is refused at once).
    """
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol signature")


def _parse_v2(data: bytes) -> ProxyHeader | None:
    probe = data[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(probe):
        raise ProxyHeaderError("wrong PROXY v2 signature")
    if len(data) < V2_FIXED:
        return None
    version_command, family, length = data[12], data[13], int.from_bytes(data[14:16], "big")
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"unsupported PROXY protocol version {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (CMD_LOCAL, CMD_PROXY):
        raise ProxyHeaderError(f"unknown PROXY v2 command {command}")
    if length > V2_MAX_PAYLOAD:
        raise ProxyHeaderError(f"PROXY v2 header of {length} bytes (limit {V2_MAX_PAYLOAD})")
    total = V2_FIXED + length
    if len(data) < total:
        return None
    payload = data[V2_FIXED:total]
    if command == CMD_LOCAL:  # the balancer's own connection (a health check): no peer to take
        return ProxyHeader(total, None)
    if family == FAMILY_TCP4:
        if length < _TCP4.size:
            raise ProxyHeaderError("PROXY v2 TCP4 address block too short")
        src, dst, sport, dport = _TCP4.unpack_from(payload)
        return ProxyHeader(
            total,
            (str(ipaddress.IPv4Address(src)), sport),
            (str(ipaddress.IPv4Address(dst)), dport),
        )
    if family == FAMILY_TCP6:
        if length < _TCP6.size:
            raise ProxyHeaderError("PROXY v2 TCP6 address block too short")
        src, dst, sport, dport = _TCP6.unpack_from(payload)
        return ProxyHeader(
            total,
            (str(ipaddress.IPv6Address(src)), sport),
            (str(ipaddress.IPv6Address(dst)), dport),
        )
    if family == FAMILY_UNSPEC:
        return ProxyHeader(total, None)
    # UDP and Unix-socket families never carry a TCP device connection.
    raise ProxyHeaderError(f"unsupported PROXY v2 address family 0x{family:02x}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if not V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
        raise ProxyHeaderError("wrong PROXY v1 signature")
    end = data.find(b"\r\n", 0, V1_MAX_LINE)
    if end < 0:
        if len(data) >= V1_MAX_LINE:
            raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX_LINE} bytes")
        return None
    try:
        fields = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError as err:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from err
    total = end + 2
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(total, None, version=1)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("malformed PROXY v1 line")
    try:
        src = ipaddress.ip_address(fields[2])
        dst = ipaddress.ip_address(fields[3])
        sport, dport = int(fields[4]), int(fields[5])
    except ValueError as err:
        raise ProxyHeaderError(f"malformed PROXY v1 address: {err}") from err
    if (src.version == 4) != (fields[1] == "TCP4") or not (0 <= sport <= 65535 and 0 <= dport <= 65535):
        raise ProxyHeaderError("PROXY v1 address does not match its family")
    return ProxyHeader(total, (str(src), sport), (str(dst), dport), version=1)


def encode_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """Build a v2 header (PROXY with the addresses, or LOCAL without); for tests and tools."""
    if source is None:
        return V2_SIGNATURE + bytes([0x20 | CMD_LOCAL, FAMILY_UNSPEC]) + b"\x00\x00"
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0] if destination else ("::" if src.version == 6 else "0.0.0.0"))
    dport = destination[1] if destination else 0
    layout, family = (_TCP4, FAMILY_TCP4) if src.version == 4 else (_TCP6, FAMILY_TCP6)
    block = layout.pack(src.packed, dst.packed, source[1], dport)
    return V2_SIGNATURE + bytes([0x20 | CMD_PROXY, family]) + len(block).to_bytes(2, "big") + block
