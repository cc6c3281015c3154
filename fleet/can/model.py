"""Value types shared by every CAN source (J1939, OBD-II, user DBC files, FLEX tracker fields)."""

from __future__ import annotations

from dataclasses import dataclass

SignalValue = float | int | str | None


@dataclass(frozen=True, slots=True)
class CanSignal:
    """One decoded vehicle parameter.

    ``name`` is a canonical snake_case name (docs/can.md) that reads the same whatever the source;
    ``value`` is the physical value, a label for enumerated states, or ``None`` when the vehicle reported
    "not available" or an error; ``source`` tells where it came from, e.g. ``J1939:PGN61444:SA0``,
    ``OBD2:PID0x0C``, ``CAN:0x123`` or ``FLEX:F55``.
    """

    name: str
    value: SignalValue
    unit: str | None
    source: str
