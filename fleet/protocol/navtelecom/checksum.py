"""Checksums of the Navtelecom protocols: CRC-8 for FLEX frames, XOR-8 for NTCB headers and bodies.

CRC-8 here is polynomial 0x31 (x^8 + x^5 + x^4 + 1), initial value 0xFF, MSB first, no reflection and no
final XOR (DOC App. Б; catalogued as CRC-8/NRSC-5, check value 0xF7 for b"123456789").
"""

from __future__ import annotations

from functools import reduce
from operator import xor

__all__ = ["CRC8_TABLE", "crc8", "crc8_bytewise", "xor8"]

_POLY = 0x31
_INIT = 0xFF


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


CRC8_TABLE: tuple[int, ...] = _make_table()

# The multiplicative order of x modulo the generator polynomial is 127, so x**(127*k) == 1 (mod P) and a
# message polynomial can be folded onto itself in chunks of 127*k bits without changing its remainder. That
# turns a 1.3 KB FLEX archive (about 45 us through the byte table in CPython) into a handful of big-integer
# operations; the last <= 127 bits still go through the table. Short frames (replies, ~C, most ~T) are
# cheaper byte by byte.
_ORDER = 127
_FOLD_THRESHOLD = 48  # bytes; below this the table loop wins


def crc8_bytewise(data: bytes | bytearray | memoryview, crc: int = _INIT) -> int:
    """Return the FLEX CRC-8 of ``data`` computed byte by byte through the table."""
    table = CRC8_TABLE
    for byte in data:
        crc = table[crc ^ byte]
    return crc


def crc8(data: bytes | bytearray | memoryview) -> int:
    """Return the FLEX CRC-8 (poly 0x31, init 0xFF) of ``data``."""
    n = len(data)
    if n < _FOLD_THRESHOLD:
        return crc8_bytewise(data)
    # The register algorithm with init 0xFF equals a zero-init CRC of the message with its first byte
    # inverted; the zero-init CRC is (M(x) * x^8) mod P, and M(x) mod P survives folding.
    poly = int.from_bytes(data, "big") ^ (0xFF << (8 * n - 8))
    fold = _ORDER
    while fold * 2 < 8 * n:
        fold *= 2
    while fold >= _ORDER:
        if poly >> fold:
            poly = (poly >> fold) ^ (poly & ((1 << fold) - 1))
        fold //= 2
    # poly now has at most 127 bits; its zero-init table CRC is poly * x^8 mod P.
    return crc8_bytewise(poly.to_bytes(16, "big"), 0)


def xor8(data: bytes | bytearray | memoryview) -> int:
    """Return the XOR of all bytes of ``data`` (the NTCB CSd/CSp checksum)."""
    n = len(data)
    if n < 64:
        return reduce(xor, data, 0)
    # XOR is carry-free, so halving a big integer repeatedly XORs the bytes together in C.
    value = int.from_bytes(data, "little")
    width = 8
    while width < 8 * n:
        width *= 2
    while width > 8:
        width //= 2
        value = (value >> width) ^ (value & ((1 << width) - 1))
    return value
