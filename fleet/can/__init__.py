"""CAN decoding: SAE J1939 / FMS, OBD-II service 01 and user DBC files, plus FLEX tracker CAN fields.

All sources yield :class:`CanSignal` values under one set of canonical names (docs/can.md).
"""

from fleet.can.decoder import CanDecoder, DecodeStats
from fleet.can.flex import flex_can_signals
from fleet.can.j1939 import J1939Id, j1939_split
from fleet.can.model import CanSignal

__all__ = ["CanDecoder", "CanSignal", "DecodeStats", "J1939Id", "flex_can_signals", "j1939_split"]
