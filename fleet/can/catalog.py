"""DBC loading and the lookup tables the decoder consults for every frame.

Everything that can be worked out once per message — which index it lives in, each signal's unit,
"not available" range and rounding — is computed here at load time, so that decoding a frame is a
dict lookup, one cantools decode and a short loop. The indexes replace cantools'
``get_message_by_frame_id``, which matches whole identifiers only: J1939 messages must match by PGN
whatever the priority, source and destination address.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path

import cantools
import structlog
from cantools.database.can import Database, Message, Signal
from cantools.database.conversion import BaseConversion
from cantools.database.namedsignalvalue import NamedSignalValue

from fleet.can import obd2
from fleet.can.derived import DERIVED_BY_PGN, Derive
from fleet.can.j1939 import not_available_floor, pgn_of
from fleet.can.model import SignalValue

log = structlog.get_logger(__name__)

BUILTIN_J1939 = "j1939_fms.dbc"
BUILTIN_OBD2 = "obd2_mode01.dbc"
OBD2_MESSAGE = "OBD2_MODE01"
# A DBC describing a whole vehicle is a few hundred kilobytes; anything far larger is not a DBC
# file worth parsing at start-up.
MAX_DBC_BYTES = 16 * 1024 * 1024
# Enough decimals to hide binary noise such as 0.4 * 3 = 1.2000000000000002 without losing any
# resolution a DBC scale can express (1/512 = 0.001953125 has nine).
MAX_DECIMALS = 9
# Value-table labels that mean the raw value carries no measurement.
MISSING_LABELS = frozenset({"error", "not_available", "not available", "n/a", "na"})
# Signal attribute that switches the J1939 range rule off for one signal ("None").
NOT_AVAILABLE_ATTRIBUTE = "FleetNotAvailable"


class Kind(enum.Enum):
    """How a message is addressed and decoded."""

    J1939 = "j1939"  # matched by PGN, J1939 "not available" ranges apply
    OBD2 = "obd2"  # service 01 response, one or more PIDs per frame
    PLAIN = "plain"  # matched by exact identifier


class DbcError(Exception):
    """A DBC file that cannot be read or parsed."""


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One DBC signal, prepared for conversion."""

    name: str
    unit: str | None
    conversion: BaseConversion
    na_floor: int | None  # raw values from here up carry no measurement ...
    labelled: frozenset[int]  # ... unless the value table gives them a meaning
    missing: frozenset[int]  # raw values the value table labels "error" / "not available"
    decimals: int | None

    def value(self, raw: float) -> SignalValue:
        """Convert a raw value to its physical value, label, or None when not available."""
        if raw in self.missing or (
            self.na_floor is not None and raw >= self.na_floor and raw not in self.labelled
        ):
            return None
        value = self.conversion.raw_to_scaled(raw, decode_choices=True)
        if isinstance(value, NamedSignalValue):
            return str(value.name)
        if self.decimals is not None and isinstance(value, float):
            return round(value, self.decimals)
        return value


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One DBC message with everything the decoder needs."""

    message: Message
    kind: Kind
    signals: dict[str, SignalSpec]
    origin: str
    min_length: int
    max_length: int
    derive: Derive | None = None
    pid_lengths: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class Catalog:
    """Messages indexed the way frames are looked up."""

    standard: dict[int, MessageSpec] = field(default_factory=dict)
    extended: dict[int, MessageSpec] = field(default_factory=dict)
    by_pgn: dict[int, MessageSpec] = field(default_factory=dict)

    def add(self, spec: MessageSpec, key: int, index: dict[int, MessageSpec]) -> None:
        """Index a message; a later DBC file replaces what an earlier one defined."""
        previous = index.get(key)
        if previous is not None:
            log.info(
                "can.dbc_message_replaced",
                key=key,
                message=spec.message.name,
                origin=spec.origin,
                replaced=previous.message.name,
                replaced_origin=previous.origin,
            )
        index[key] = spec

    def add_database(self, db: Database, origin: str, *, builtin: bool) -> int:
        """Index every message of a loaded DBC; return how many were indexed."""
        count = 0
        for message in db.messages:
            # A message without signals would swallow its frames silently (cantools also reads a
            # file cut off after a message header that way); leave such frames counted as unknown.
            if message.is_container or message.length == 0 or not message.signals:
                log.warning("can.dbc_message_skipped", message=message.name, origin=origin)
                continue
            if builtin and message.name == OBD2_MESSAGE:
                spec = _compile(message, Kind.OBD2, origin, None)
                for can_id in obd2.RESPONSE_IDS:
                    self.add(spec, can_id, self.standard)
            elif message.is_extended_frame and message.protocol == "j1939":
                pgn = pgn_of(message.frame_id)
                derive = DERIVED_BY_PGN.get(pgn) if builtin else None
                self.add(_compile(message, Kind.J1939, origin, derive), pgn, self.by_pgn)
            elif message.is_extended_frame:
                self.add(_compile(message, Kind.PLAIN, origin, None), message.frame_id, self.extended)
            else:
                self.add(_compile(message, Kind.PLAIN, origin, None), message.frame_id, self.standard)
            count += 1
        return count


def _decimals(number: float) -> int:
    exponent = Decimal(repr(number)).normalize().as_tuple().exponent
    return min(MAX_DECIMALS, max(0, -exponent)) if isinstance(exponent, int) else MAX_DECIMALS


def _attribute(signal: Signal, name: str) -> str | None:
    attributes = signal.dbc.attributes if signal.dbc is not None else {}
    attribute = attributes.get(name)
    if attribute is None:
        return None
    value = attribute.value
    choices = getattr(attribute.definition, "choices", None)
    if isinstance(value, int) and choices and 0 <= value < len(choices):
        return str(choices[value])
    return str(value)


def _compile_signal(signal: Signal, kind: Kind) -> SignalSpec:
    choices: Mapping[int, object] = signal.conversion.choices or {}
    missing = frozenset(
        int(raw) for raw, label in choices.items() if str(label).strip().lower() in MISSING_LABELS
    )
    labelled = frozenset(int(raw) for raw in choices) - missing
    na_floor = None
    if (
        kind is Kind.J1939
        and not signal.is_signed
        and not signal.is_float
        and (_attribute(signal, NOT_AVAILABLE_ATTRIBUTE) or "J1939").lower() != "none"
    ):
        na_floor = not_available_floor(signal.length)
    decimals = None
    if not signal.is_float:
        decimals = max(_decimals(signal.conversion.scale), _decimals(signal.conversion.offset))
    return SignalSpec(
        name=signal.name,
        unit=signal.unit or None,
        conversion=signal.conversion,
        na_floor=na_floor,
        labelled=labelled,
        missing=missing,
        decimals=decimals,
    )


def _compile(message: Message, kind: Kind, origin: str, derive: Derive | None) -> MessageSpec:
    signals = {s.name: _compile_signal(s, kind) for s in message.signals if not s.is_multiplexer}
    length = message.length
    return MessageSpec(
        message=message,
        kind=kind,
        signals=signals,
        origin=origin,
        # Classic frames may carry padding after the last defined byte; CAN FD lengths are exact.
        min_length=length,
        max_length=max(8, length),
        derive=derive,
        pid_lengths=obd2.pid_data_lengths(message) if kind is Kind.OBD2 else {},
    )


def parse_dbc(text: str, origin: str) -> Database:
    """Parse DBC text, raising DbcError for anything cantools refuses."""
    try:
        db = cantools.database.load_string(text, database_format="dbc", strict=True)
    except Exception as err:  # cantools raises parser, value and key errors of many kinds
        raise DbcError(f"{origin}: {err}") from err
    if not isinstance(db, Database):
        raise DbcError(f"{origin}: not a CAN database")
    return db


def read_dbc(path: Path) -> Database:
    """Read a DBC file: UTF-8 when it decodes as such, else Windows-1252 (the format's tradition)."""
    try:
        size = path.stat().st_size
        if size > MAX_DBC_BYTES:
            raise DbcError(f"{path}: {size} bytes is more than the {MAX_DBC_BYTES} accepted")
        raw = path.read_bytes()
    except OSError as err:
        raise DbcError(f"{path}: {err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    return parse_dbc(text, str(path))


def load_builtin(catalog: Catalog) -> None:
    """Index the DBC files shipped in the package."""
    folder = resources.files("fleet.can.dbc")
    for name in (BUILTIN_J1939, BUILTIN_OBD2):
        text = folder.joinpath(name).read_text(encoding="utf-8")
        catalog.add_database(parse_dbc(text, name), name, builtin=True)


def load_directory(catalog: Catalog, directory: Path) -> tuple[list[Path], list[Path]]:
    """Index every *.dbc file of a directory in name order; return (loaded, skipped) paths.

    A file that cannot be read or parsed is logged and skipped: one bad vendor file must not stop
    the server or hide the others.
    """
    loaded: list[Path] = []
    skipped: list[Path] = []
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".dbc" and p.is_file())
    except OSError as err:
        log.warning("can.dbc_directory_unreadable", directory=str(directory), error=str(err))
        return loaded, skipped
    for path in paths:
        try:
            db = read_dbc(path)
        except DbcError as err:
            log.warning("can.dbc_skipped", path=str(path), error=str(err))
            skipped.append(path)
            continue
        count = catalog.add_database(db, str(path), builtin=False)
        log.info("can.dbc_loaded", path=str(path), messages=count)
        loaded.append(path)
    return loaded, skipped
