"""The protocol-neutral codec contract: what the listener, the writer and the registry know of a protocol.

A device protocol is one package under ``fleet/protocol/`` exposing a :class:`ProtocolSpec` named
``PROTOCOL`` (see docs/PROTOCOLS.md). The ingest code speaks to it only through this module:

* a :class:`CodecSession` per connection - ``feed(bytes)`` returns one output per consumed frame;
* the outputs below - :class:`Identify` (a device claims an identity: the listener decides and sends
  ``accept`` or ``refuse``), :class:`Reply` (send now), :class:`Telemetry` (store, commit, then send
  ``ack``), :class:`CommandAnswer`, :class:`KeepAlive`, :class:`Ignored`, :class:`Rejected` (no answer,
  the connection stays) and :class:`Fatal` (send ``farewell``, close);
* :class:`Command` values (typed device commands) that a session encodes, under the protocol's
  :class:`CommandRules`;
* a :class:`RowSource` turning its own Telemetry into the neutral rows of :mod:`fleet.protocol.rows`;
* a :class:`Redecoder` for ``fleet redecode``.

Codecs stay pure: no sockets, no clocks, no database. Every output carries the bytes it came from
(``raw``) so the listener can keep each frame in ``raw_frames`` with its outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fleet.protocol.rows import FrameRows

__all__ = [
    "COMMAND_TYPES",
    "CodecSession",
    "Command",
    "CommandAnswer",
    "CommandRules",
    "CustomCommand",
    "Fatal",
    "Identify",
    "Ignored",
    "KeepAlive",
    "Output",
    "OutputCommand",
    "ProtocolSpec",
    "Reboot",
    "Redecoder",
    "Rejected",
    "Reply",
    "RequestPosition",
    "ResendArchive",
    "RowSource",
    "Telemetry",
    "UnsupportedCommand",
]


# --- outputs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identify:
    """The device claims an identity (IMEI). The listener decides (registry, unknown-device policy).

    Accepted: send ``accept`` (may be empty), and the session may proceed. Refused: send ``refuse`` (may be
    empty), then close. ``raw`` is the login frame (empty when the identity came inside a data frame).
    """

    identity: str
    accept: bytes
    refuse: bytes
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``data`` to the device now (after the ACKs queued before it), e.g. a negotiation answer.

    ``kind`` labels the frame (metrics, ``raw_frames.frame_type``); ``state_changed`` asks the listener to
    persist the session's new :attr:`CodecSession.state`.
    """

    data: bytes
    raw: bytes = field(repr=False)
    kind: str
    state_changed: bool = False


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Records to store; send ``ack`` only after they are committed.

    ``kind`` labels the frame; ``records`` are protocol-specific objects that only the protocol's own
    :class:`RowSource` reads; ``event_index`` is a sequence number the frame carries (echoed in its ACK by
    some protocols), for the row source.
    """

    kind: str
    records: Sequence[Any]
    ack: bytes
    raw: bytes = field(repr=False)
    event_index: int | None = None


@dataclass(frozen=True, slots=True)
class CommandAnswer:
    """A device's answer to a server command or query (nothing to send back).

    ``failed`` - the device said it did not execute the command; ``firmware`` - model and firmware when
    the answer reports them (stored on the device); ``record``/``version`` - protocol-specific decodes.
    """

    text: str
    record: Any
    raw: bytes = field(repr=False)
    version: Any = None
    firmware: str | None = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A keep-alive; no answer is expected (it still counts as activity)."""

    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Ignored:
    """A valid frame the server recognises but does not use; kept with outcome ``ignored``."""

    kind: str
    reason: str
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A delimited frame that gets no answer (bad checksum, malformed...); the connection continues.

    ``code`` is a bounded reason (a metrics label).
    """

    code: str
    reason: str
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Fatal:
    """The stream cannot go on: send ``farewell`` (may be empty), then close the connection."""

    code: str
    reason: str
    excerpt: bytes  # up to 32 bytes from where framing failed, for the log
    farewell: bytes = b""

    @property
    def raw(self) -> bytes:
        """Return the excerpt (a Fatal has no complete frame to store)."""
        return self.excerpt


Output = Identify | Reply | Telemetry | CommandAnswer | KeepAlive | Ignored | Rejected | Fatal


# --- commands -----------------------------------------------------------------------------------------------


class UnsupportedCommand(ValueError):
    """The protocol (or this device's state) cannot carry the command."""


@dataclass(frozen=True, slots=True)
class CustomCommand:
    """Protocol-native command text, sent as it is (e.g. ``*!1Y`` or ``getinfo``)."""

    text: str
    type: str = field(default="custom", init=False)


@dataclass(frozen=True, slots=True)
class OutputCommand:
    """Switch digital output ``index`` (1-based) on or off."""

    index: int
    on: bool
    type: str = field(default="output", init=False)


@dataclass(frozen=True, slots=True)
class RequestPosition:
    """Ask for the current position/state now."""

    type: str = field(default="request_position", init=False)


@dataclass(frozen=True, slots=True)
class Reboot:
    """Restart the tracker."""

    type: str = field(default="reboot", init=False)


@dataclass(frozen=True, slots=True)
class ResendArchive:
    """Resend the black box records of ``[start, end]`` (UTC)."""

    start: datetime
    end: datetime
    type: str = field(default="resend_archive", init=False)


Command = CustomCommand | OutputCommand | RequestPosition | Reboot | ResendArchive
COMMAND_TYPES = ("custom", "output", "request_position", "reboot", "resend_archive")


@dataclass(frozen=True, slots=True)
class CommandRules:
    """How a protocol sends commands.

    ``supported``: command types it can encode. ``hold_acks``: while a command waits for its answer, the
    ACKs of received frames are held back (Navtelecom sends a command *instead of* an ACK, then the ACK
    after the answer); otherwise commands simply go out between frames, after the ACKs queued before them.
    ``answer_timeout_sec``: how long an answer is awaited before the command counts as unanswered.
    """

    supported: frozenset[str]
    hold_acks: bool = False
    answer_timeout_sec: float = 60.0


# --- the session and the protocol ---------------------------------------------------------------------------


@runtime_checkable
class CodecSession(Protocol):
    """One connection's decoder (pure: bytes in, outputs out)."""

    def feed(self, data: bytes) -> list[Output]:
        """Consume received bytes; return the outputs of every frame they completed."""

    @property
    def identity(self) -> str | None:
        """The identity the device claimed (None until it did)."""

    @property
    def ready(self) -> bool:
        """True once an identified device may send data (e.g. FLEX negotiated): backpressure applies."""

    @property
    def state(self) -> Mapping[str, Any] | None:
        """Protocol state to persist per device (JSON-able; e.g. negotiated versions and mask)."""

    @property
    def buffered(self) -> int:
        """Received bytes not framed yet (a frame trickling in)."""

    @property
    def archive_protocol(self) -> str:
        """``raw_frames.protocol`` of this connection's frames (a protocol may have dialects)."""

    def frame_type(self, raw: bytes) -> str:
        """A short label of a raw frame (from its first bytes), for ``raw_frames.frame_type``."""

    def encode_command(self, command: Command) -> bytes:
        """Return the bytes of a command for this device; raise :class:`UnsupportedCommand`."""


class RowSource(Protocol):
    """Turns a protocol's Telemetry into rows (the protocol's own record classes stay inside it)."""

    def telemetry(self, device_id: int, telemetry: Telemetry, received: datetime) -> FrameRows:
        """Return the rows one frame contributes to a batch."""


class Redecoder(Protocol):
    """Decodes stored frames again, in reception order, tracking state the stream itself changes."""

    def decode(self, frame_type: str | None, data: bytes) -> Output | None:
        """Return the frame's output (Telemetry to store again), or None when the frame is skipped."""


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """A device protocol as the registry knows it.

    ``port_setting`` names the :class:`fleet.config.Settings` field holding its TCP port (0 disables
    the listener); ``archive_protocols`` are the ``raw_frames.protocol`` labels its sessions write (the
    first is the protocol's own name), so that ``fleet redecode`` finds the protocol of a stored frame.
    ``identity_pattern`` is what an administrator may register as the device's identity (a regular
    expression matched whole; described by ``identity_shape``); both protocols today send a 15-digit IMEI.
    """

    name: str
    title: str
    port_setting: str
    default_port: int
    new_session: Callable[[Any], CodecSession]  # (settings) -> session
    new_rows: Callable[[], RowSource]
    new_redecoder: Callable[[Mapping[str, Any] | None, Any], Redecoder]  # (stored state, settings)
    commands: CommandRules
    check_command: Callable[[Command], None]  # raise UnsupportedCommand before a command is queued
    archive_protocols: tuple[str, ...] = ()
    identity_pattern: str = "[0-9]{15}"
    identity_shape: str = "15 digits"

    def owns_archive(self, label: str) -> bool:
        """Return whether stored frames labelled ``label`` were written by this protocol."""
        return label == self.name or label in self.archive_protocols
