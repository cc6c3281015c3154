"""SAE J1939 addressing and the J1939-71 "not available" conventions."""

from __future__ import annotations

from typing import NamedTuple

MAX_EXTENDED_ID = 0x1FFFFFFF
# PDU format values below 240 address one node (PDU1): the PDU specific byte is a destination
# address, not part of the parameter group number. From 240 up (PDU2) it is a group extension.
PDU2_MIN_FORMAT = 240
GLOBAL_ADDRESS = 0xFF


class J1939Id(NamedTuple):
    """The fields of a 29-bit J1939 identifier."""

    priority: int
    pgn: int
    source_address: int
    destination: int | None  # None for PDU2 (broadcast) parameter groups


def j1939_split(can_id: int) -> J1939Id:
    """Split a 29-bit identifier into priority, PGN, source address and destination address."""
    if not 0 <= can_id <= MAX_EXTENDED_ID:
        raise ValueError(f"not a 29-bit CAN identifier: {can_id!r}")
    priority = (can_id >> 26) & 0x7
    pdu_format = (can_id >> 16) & 0xFF
    pdu_specific = (can_id >> 8) & 0xFF
    # Extended data page, data page, PDU format and PDU specific: 18 bits.
    pgn = (can_id >> 8) & 0x3FFFF
    destination: int | None = None
    if pdu_format < PDU2_MIN_FORMAT:
        pgn &= 0x3FF00
        destination = pdu_specific
    return J1939Id(priority, pgn, can_id & 0xFF, destination)


def pgn_of(can_id: int) -> int:
    """Return the PGN of a 29-bit identifier (the destination byte of PDU1 groups cleared)."""
    pgn = (can_id >> 8) & 0x3FFFF
    if (pgn >> 8) & 0xFF < PDU2_MIN_FORMAT:
        pgn &= 0x3FF00
    return pgn


def j1939_source(pgn: int, source_address: int) -> str:
    """Format the ``CanSignal.source`` of a J1939 parameter group."""
    return f"J1939:PGN{pgn}:SA{source_address}"


def not_available_floor(bit_length: int) -> int | None:
    """Return the smallest raw value that is not a valid measurement for an unsigned J1939 parameter.

    J1939-71 reserves the top of every range: for whole bytes, raw values from 0xFB (then 0xFBxx,
    0xFBxxxx, ...) up are parameter-specific indicators, reserved, error (0xFE..) or not available
    (0xFF..). For bit fields, the all-ones pattern is "not available"; a 2-bit status also uses
    binary 10 for "error". Wider bit fields that are not whole bytes define their error codes per
    parameter, so only all-ones is reserved here (a DBC value table may add "error" labels).
    """
    if bit_length <= 1:
        return None
    if bit_length == 2:
        return 2
    if bit_length % 8 == 0:
        return 0xFB << (bit_length - 8)
    return (1 << bit_length) - 1
