"""Teltonika FMB/FMC/FMM codec: Codec 8, 8 Extended and 16 over TCP, Codec 12 commands (spec/teltonika.md).

Pure code: bytes in, neutral outputs (:mod:`fleet.protocol.base`) out. Built the way docs/PROTOCOLS.md
says a protocol is added - this package is the whole of it:

* :class:`TeltonikaSession` - the CodecSession (framing, IMEI login, AVL packets, GPRS messages);
* :mod:`.avl` - records of the three telemetry codecs; :mod:`.messages` - Codec 12/13/14/15 and CRC-16;
* :mod:`.io_table` - the IO elements as data (published as docs/teltonika_io.md by :mod:`.docgen`);
* :class:`TeltonikaRows` - records into positions, CAN signals and events;
* :func:`command_bytes` - neutral commands as Codec 12 text commands;
* :mod:`.encoder` and :mod:`.simulation` - the device side, for tests and ``fleet simulate teltonika``;
* :data:`PROTOCOL` - the registry entry.
"""

from fleet.protocol.base import CommandRules, ProtocolSpec

from .avl import CODEC_8, CODEC_8E, CODEC_16, AvlRecord, DecodeError, decode_records
from .encoder import avl_packet, encode_record, imei_packet, response
from .io_table import IO_ELEMENTS, IoSpec
from .messages import crc16_arc, decode_message, encode_message
from .redecode import TeltonikaRedecoder
from .rows import TeltonikaRows
from .session import ACCEPT, ARCHIVE_PROTOCOL, REFUSE, TeltonikaSession, command_bytes


def check_command(cmd: object) -> None:
    """Raise UnsupportedCommand when a Teltonika tracker cannot carry ``cmd``."""
    command_bytes(cmd)  # type: ignore[arg-type]


PROTOCOL = ProtocolSpec(
    name=ARCHIVE_PROTOCOL,
    title="Teltonika Codec 8/8E/16",
    port_setting="teltonika_port",
    default_port=5027,
    new_session=TeltonikaSession.from_settings,
    new_rows=TeltonikaRows,
    new_redecoder=TeltonikaRedecoder,
    # Codec 12 commands go out between AVL packets (after the ACKs queued before them); at most one
    # outstanding, answered by the oldest (spec §5.1).
    commands=CommandRules(
        supported=frozenset({"custom", "output", "request_position", "reboot"}),
        hold_acks=False,
        answer_timeout_sec=60.0,
    ),
    check_command=check_command,
)

__all__ = [
    "ACCEPT",
    "CODEC_8",
    "CODEC_8E",
    "CODEC_16",
    "IO_ELEMENTS",
    "PROTOCOL",
    "REFUSE",
    "AvlRecord",
    "DecodeError",
    "IoSpec",
    "TeltonikaRedecoder",
    "TeltonikaRows",
    "TeltonikaSession",
    "avl_packet",
    "check_command",
    "command_bytes",
    "crc16_arc",
    "decode_message",
    "decode_records",
    "encode_message",
    "encode_record",
    "imei_packet",
    "response",
]
