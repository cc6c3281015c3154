"""OBD-II service 01 responses carried in ISO 15765-4 single frames on 11-bit identifiers."""

from __future__ import annotations

from dataclasses import dataclass, field

from cantools.database.can import Message

# ECU #1..#8 answer a functional request (0x7DF) on 0x7E8..0x7EF.
RESPONSE_IDS = range(0x7E8, 0x7F0)
SERVICE_01_RESPONSE = 0x41
# Bytes of a response frame before the data bytes A, B, C, D: ISO-TP length, service, PID.
HEADER_LENGTH = 3
# A classic CAN frame holds 8 bytes; an ISO-TP single frame spends one on its length (1..7).
_MAX_FRAME = 8
_MIN_SINGLE_FRAME_LENGTH = 2  # service byte and PID


def obd2_source(pid: int) -> str:
    """Format the ``CanSignal.source`` of an OBD-II PID."""
    return f"OBD2:PID0x{pid:02X}"


def pid_data_lengths(message: Message) -> dict[int, int]:
    """Return how many data bytes each PID of a multiplexed service-01 message carries."""
    ends: dict[int, int] = {}
    for signal in message.signals:
        if not signal.multiplexer_ids:
            continue
        if signal.byte_order == "little_endian":
            last_bit = signal.start + signal.length - 1
        else:
            # DBC big-endian start bits name the most significant bit in "sawtooth" numbering.
            msb = (signal.start // 8) * 8 + (7 - signal.start % 8)
            last_bit = msb + signal.length - 1
        end = last_bit // 8 + 1 - HEADER_LENGTH
        for pid in signal.multiplexer_ids:
            ends[pid] = max(ends.get(pid, 0), end)
    return ends


@dataclass(slots=True)
class Service01Response:
    """The PIDs found in one response frame, and what stopped the reading, if anything."""

    pids: list[tuple[int, bytes]] = field(default_factory=list)
    unknown: str | None = None
    malformed: bool = False


def split_service01(data: bytes, pid_lengths: dict[int, int]) -> Service01Response:
    """Cut a single-frame service 01 response into (PID, data bytes) pairs.

    An ECU may answer a request for several PIDs in one frame (``06 41 0C 1A F8 0D 32``), so the
    payload is read PID after PID; reading stops at the first PID whose length is unknown.
    """
    result = Service01Response()
    if not HEADER_LENGTH <= len(data) <= _MAX_FRAME:
        result.malformed = True
        return result
    pci = data[0]
    length = pci & 0x0F
    # The high nibble is the ISO-TP frame type: only single frames (0) are complete in themselves.
    if pci >> 4 != 0:
        result.unknown = "OBD2:ISO-TP-multi-frame"
        return result
    if not _MIN_SINGLE_FRAME_LENGTH <= length <= len(data) - 1:
        result.malformed = True
        return result
    if data[1] != SERVICE_01_RESPONSE:
        result.unknown = f"OBD2:SID0x{data[1]:02X}"
        return result
    payload = data[2 : 1 + length]
    pos = 0
    while pos < len(payload):
        pid = payload[pos]
        size = pid_lengths.get(pid)
        if size is None:
            result.unknown = obd2_source(pid)
            break
        chunk = payload[pos + 1 : pos + 1 + size]
        if len(chunk) != size:
            result.malformed = True
            break
        result.pids.append((pid, chunk))
        pos += 1 + size
    return result


def frame_for_pid(pid: int, chunk: bytes, message_length: int) -> bytes:
    """Rebuild a zero-padded frame holding one PID, in the layout of the service-01 DBC message."""
    frame = bytes((1 + 1 + len(chunk), SERVICE_01_RESPONSE, pid)) + chunk
    return frame.ljust(message_length, b"\x00")
