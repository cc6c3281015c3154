"""Decode raw CAN frames into canonical signals."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from cantools.database.errors import DecodeError

from fleet.can import obd2
from fleet.can.catalog import Catalog, Kind, MessageSpec, load_builtin, load_directory
from fleet.can.j1939 import MAX_EXTENDED_ID, j1939_source, pgn_of
from fleet.can.model import CanSignal

log = structlog.get_logger(__name__)

MAX_STANDARD_ID = 0x7FF
# Distinct identifiers a J1939 bus carries are bounded by PGNs x source addresses, but a faulty
# feed can send anything: cap the per-identifier memo and the per-key unknown tally.
MAX_RESOLVED_IDS = 4096
MAX_UNKNOWN_KEYS = 1024
OTHER_UNKNOWN = "other"


@dataclass(slots=True)
class DecodeStats:
    """Running counts a caller can export as metrics or report and reset."""

    frames: int = 0
    decoded: int = 0  # frames that yielded at least one signal
    unknown: int = 0  # no DBC message (or OBD-II PID) for the frame
    malformed: int = 0  # known message, but wrong length, bad identifier or undecodable bytes
    unknown_keys: Counter[str] = field(default_factory=Counter)

    def note_unknown(self, key: str) -> None:
        """Count an unknown frame under a key such as ``J1939:PGN65280`` or ``CAN:0x123``."""
        self.unknown += 1
        if key in self.unknown_keys or len(self.unknown_keys) < MAX_UNKNOWN_KEYS:
            self.unknown_keys[key] += 1
        else:
            self.unknown_keys[OTHER_UNKNOWN] += 1

    def reset(self) -> None:
        """Start counting from zero."""
        self.frames = self.decoded = self.unknown = self.malformed = 0
        self.unknown_keys.clear()


class CanDecoder:
    """Decode CAN frames with the built-in J1939/FMS and OBD-II DBC files plus user DBC files.

    User files (``*.dbc`` in ``extra_dbc_dir``, read in name order) are loaded after the built-in
    ones, so a user message replaces a built-in one with the same PGN or identifier. A file that
    fails to parse is logged and skipped. The decoder is not thread-safe (its counters and memo are
    plain attributes); use one per thread or event loop.
    """

    def __init__(self, extra_dbc_dir: Path | None = None) -> None:
        self._catalog = Catalog()
        load_builtin(self._catalog)
        self.dbc_files: list[Path] = []
        self.skipped_dbc_files: list[Path] = []
        if extra_dbc_dir is not None:
            self.dbc_files, self.skipped_dbc_files = load_directory(self._catalog, Path(extra_dbc_dir))
        self.stats = DecodeStats()
        # 29-bit identifier -> (message, source label), filled as J1939 frames are resolved by PGN.
        self._resolved: dict[int, tuple[MessageSpec, str]] = {}

    def decode(
        self, can_id: int, data: bytes | bytearray | memoryview, extended: bool | None = None
    ) -> list[CanSignal]:
        """Decode one frame; return [] for unknown or malformed frames (counted in ``stats``)."""
        stats = self.stats
        stats.frames += 1
        if extended is None:
            extended = can_id > MAX_STANDARD_ID
        if not 0 <= can_id <= (MAX_EXTENDED_ID if extended else MAX_STANDARD_ID):
            stats.malformed += 1
            return []
        data = bytes(data)
        if extended:
            found = self._resolve_extended(can_id)
            if found is None:
                return []
            spec, source = found
        else:
            standard = self._catalog.standard.get(can_id)
            if standard is None:
                stats.note_unknown(f"CAN:0x{can_id:03X}")
                return []
            spec, source = standard, f"CAN:0x{can_id:03X}"
        if spec.kind is Kind.OBD2:
            signals = self._decode_obd2(spec, data)
        elif spec.min_length <= len(data) <= spec.max_length:
            signals = self._decode_message(spec, data, source)
        else:
            stats.malformed += 1
            return []
        if signals:
            stats.decoded += 1
        return signals

    def _resolve_extended(self, can_id: int) -> tuple[MessageSpec, str] | None:
        found = self._resolved.get(can_id)
        if found is not None:
            return found
        catalog = self._catalog
        exact = catalog.extended.get(can_id)
        if exact is not None:
            found = (exact, f"CAN:0x{can_id:08X}")
        else:
            pgn = pgn_of(can_id)
            spec = catalog.by_pgn.get(pgn)
            if spec is None:
                self.stats.note_unknown(f"J1939:PGN{pgn}")
                return None
            found = (spec, j1939_source(pgn, can_id & 0xFF))
        if len(self._resolved) < MAX_RESOLVED_IDS:
            self._resolved[can_id] = found
        return found

    def _decode_message(self, spec: MessageSpec, data: bytes, source: str) -> list[CanSignal]:
        try:
            raw = spec.message.decode_simple(data, decode_choices=False, scaling=False)
        except (DecodeError, ValueError, KeyError, IndexError):
            # Multiplexed user messages raise for a multiplexer value they do not define.
            self.stats.malformed += 1
            return []
        signals = spec.signals
        out = [
            CanSignal(name, sig.value(value), sig.unit, source)
            for name, value in raw.items()
            if (sig := signals.get(name)) is not None and isinstance(value, int | float)
        ]
        if spec.derive is not None:
            out = spec.derive(raw, out, data, source)
        return out

    def _decode_obd2(self, spec: MessageSpec, data: bytes) -> list[CanSignal]:
        response = obd2.split_service01(data, spec.pid_lengths)
        if response.malformed:
            self.stats.malformed += 1
        elif response.unknown is not None:
            self.stats.note_unknown(response.unknown)
        out: list[CanSignal] = []
        for pid, chunk in response.pids:
            frame = obd2.frame_for_pid(pid, chunk, spec.message.length)
            out.extend(self._decode_message(spec, frame, obd2.obd2_source(pid)))
        return out
