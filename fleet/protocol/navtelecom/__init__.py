"""Navtelecom NTCB + FLEX codec (and the SVOI text dialect): bytes in, frames, records and replies out.

Pure code: no sockets, no clocks, no database. Per connection the listener creates a
:class:`DeviceSession` (dialect auto-detected; or :class:`NavtelecomSession` / :class:`TextSession`)
and calls ``feed(data)``, which returns one output per consumed frame: :class:`Reply` (send now),
:class:`Telemetry` (store, commit, then send ``ack``), :class:`CommandAnswer`, :class:`KeepAlive`,
:class:`Rejected` (no answer, connection stays) and finally :class:`Fatal` (close). See ``outputs``.

* Redecode stored frames: :func:`decode_frame` with the stored :class:`Negotiation` (or mask bytes).
* Server commands: :func:`command`, :func:`command_set_outputs`, :func:`command_sync`,
  :func:`query_version`, :func:`query_state` (or ``session.command(text)`` to use the device's ids).
* Device side, for tests and the simulator: :func:`handshake`, :func:`flex_negotiation`,
  :func:`build_record`, :func:`archive`, :func:`event`, :func:`current`, :func:`extra_record`,
  :func:`extra_archive`, :func:`extra_event`, :func:`device_answer`, :func:`ping`.
* Field table: :data:`FIELDS` (published as docs/navtelecom_fields.md); layouts via
  :func:`layout_for_mask` / :func:`layout_for_fields`.
* For the server: :data:`PROTOCOL` (the registry entry: :class:`NavtelecomCodec` sessions, the row source
  :class:`RowBuilder`, commands, redecoding; see docs/PROTOCOLS.md).
"""

from fleet.protocol.base import CommandRules, ProtocolSpec

from .checksum import crc8, xor8
from .codec import (
    ARCHIVE_PROTOCOL,
    TEXT_ARCHIVE_PROTOCOL,
    NavtelecomCodec,
    NavtelecomRedecoder,
    check_command,
    command_bytes,
)
from .encoder import (
    archive,
    build_record,
    current,
    device_answer,
    event,
    extra_archive,
    extra_event,
    extra_record,
    flex_negotiation,
    handshake,
    ping,
)
from .fields import FIELDS, FieldSpec
from .flex import ack_archive, ack_current, ack_event, ack_extra_archive, ack_extra_event
from .framing import MAX_FRAME_BYTES, Frame, FrameKind, Framer, FramingError
from .layout import (
    FlexLayout,
    LayoutError,
    fields_from_mask,
    layout_for_fields,
    layout_for_mask,
    mask_from_fields,
)
from .ntcb import command, command_set_outputs, command_sync, parse_version_answer, query_state, query_version
from .outputs import (
    CommandAnswer,
    DeviceVersion,
    Fatal,
    FatalCode,
    KeepAlive,
    Output,
    RejectCode,
    Rejected,
    Reply,
    ReplyKind,
    Telemetry,
    TelemetryKind,
)
from .records import CanFrame, ExtraItem, ExtraRecord, FlexRecord, LegacyRecord
from .rows import FlexPlan, RowBuilder
from .session import NavtelecomSession, Negotiation, SessionState, decode_frame
from .text import DeviceSession, Dialect, TextEvent, TextPosition, TextSession, detect_dialect

PROTOCOL = ProtocolSpec(
    name=ARCHIVE_PROTOCOL,
    title="Navtelecom NTCB/FLEX",
    port_setting="server_port",
    default_port=5221,
    new_session=NavtelecomCodec.from_settings,
    new_rows=RowBuilder,
    new_redecoder=NavtelecomRedecoder,
    # DOC p. 13: during an upload a command goes out instead of an ACK; the ACK follows the answer.
    commands=CommandRules(
        supported=frozenset({"custom", "output", "request_position", "reboot", "resend_archive"}),
        hold_acks=True,
        answer_timeout_sec=60.0,
    ),
    check_command=check_command,
    archive_protocols=(TEXT_ARCHIVE_PROTOCOL,),
)

__all__ = [
    "FIELDS",
    "MAX_FRAME_BYTES",
    "PROTOCOL",
    "CanFrame",
    "CommandAnswer",
    "DeviceSession",
    "DeviceVersion",
    "Dialect",
    "ExtraItem",
    "ExtraRecord",
    "Fatal",
    "FatalCode",
    "FieldSpec",
    "FlexLayout",
    "FlexPlan",
    "FlexRecord",
    "Frame",
    "FrameKind",
    "Framer",
    "FramingError",
    "KeepAlive",
    "LayoutError",
    "LegacyRecord",
    "NavtelecomCodec",
    "NavtelecomRedecoder",
    "NavtelecomSession",
    "Negotiation",
    "Output",
    "RejectCode",
    "Rejected",
    "Reply",
    "ReplyKind",
    "RowBuilder",
    "SessionState",
    "Telemetry",
    "TelemetryKind",
    "TextEvent",
    "TextPosition",
    "TextSession",
    "ack_archive",
    "ack_current",
    "ack_event",
    "ack_extra_archive",
    "ack_extra_event",
    "archive",
    "build_record",
    "check_command",
    "command",
    "command_bytes",
    "command_set_outputs",
    "command_sync",
    "crc8",
    "current",
    "decode_frame",
    "detect_dialect",
    "device_answer",
    "event",
    "extra_archive",
    "extra_event",
    "extra_record",
    "fields_from_mask",
    "flex_negotiation",
    "handshake",
    "layout_for_fields",
    "layout_for_mask",
    "mask_from_fields",
    "parse_version_answer",
    "ping",
    "query_state",
    "query_version",
    "xor8",
]
