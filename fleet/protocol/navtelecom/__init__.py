"""Navtelecom NTCB + FLEX codec (and the SVOI text dialect): bytes in, frames, records and replies out.

The listener uses :class:`DeviceSession` (or :class:`NavtelecomSession` / :class:`TextSession` directly)
per connection: ``feed(data)`` returns outputs (:class:`Reply`, :class:`Telemetry`, :class:`CommandAnswer`,
:class:`KeepAlive`, :class:`Rejected`, :class:`Fatal`). See ``outputs`` for the contract.
"""

from .checksum import crc8, xor8
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
from .session import NavtelecomSession, Negotiation, SessionState, decode_frame
from .text import DeviceSession, Dialect, TextEvent, TextPosition, TextSession, detect_dialect

__all__ = [
    "FIELDS",
    "MAX_FRAME_BYTES",
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
    "FlexRecord",
    "Frame",
    "FrameKind",
    "Framer",
    "FramingError",
    "KeepAlive",
    "LayoutError",
    "LegacyRecord",
    "NavtelecomSession",
    "Negotiation",
    "Output",
    "RejectCode",
    "Rejected",
    "Reply",
    "ReplyKind",
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
    "command",
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
