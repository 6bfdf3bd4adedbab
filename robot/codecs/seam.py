"""The protocol seam: what a robot's firmware says, apart from how bytes travel.

``RobotLink`` (robot/link/driver.py) owns the port, the reader thread, locked writes,
reconnects, the silence timer, STOP and transcripts: what every line-based robot
needs. A ``LineCodec`` owns only the words: it turns a command into one line, and
one received line into a ``Reply``. It does no I/O and keeps no state between
lines, so tests feed it bytes. Built-ins: ``json`` (robot/codecs/json_codec.py, this
project's own firmware) and ``text`` (robot/codecs/text_codec.py); a lab's own codec is
``--robot-protocol package.module:ClassName`` (robot/codecs/loader.py, docs/robot-adapters.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from i18n import message

MAX_LINE = 64 * 1024

# What a received line can be. "invalid" lines are skipped, counted and shown in
# the transcript, never attributed to a command. "stray": a well-formed reply that
# is not the command in flight's (a result for another verb, a stale handshake
# answer, a reply with nothing in flight): the robot is out of step or still working.
REPLY_KINDS = ("ack", "progress", "result", "heartbeat", "log", "alarm", "stray", "invalid")


@dataclass
class Reply:
    """One received line, decoded.

    ack: the robot took the command. progress: ``done``/``total`` and an optional
    per-item datum ``item`` (e.g. one scanned bottle), kept as the partial result if
    the command ends early. result: the command ended; ``success`` and ``message``,
    ``data`` for its result. heartbeat / log: the robot is alive (log text in
    ``message``). alarm: the robot stopped itself, its state is unknown. stray: a
    reply that belongs to no command in flight, the reason in ``error``. invalid:
    the reason in ``error``.

    ``id`` is the command id for codecs whose replies carry one (``uses_ids``).
    ``to_stop`` marks a reply that belongs to a STOP the host sent (no-id codecs).
    """

    kind: str
    id: int | None = None
    success: bool | None = None
    message: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    done: int | None = None
    total: int | None = None
    item: dict[str, Any] | None = None
    error: str | None = None
    # ``message`` or ``error`` as the codec composed it (not the robot's own words), to
    # be shown in the operator's language: ``i18n.message(key, **params)``.
    text: dict[str, Any] | None = None
    why: dict[str, Any] | None = None
    to_stop: bool = False
    # A result whose content was refused: "too_deep" (shared/jsonbounds.py) or "too_long"
    # (over max_line). The command fails.
    rejected: str | None = None


@dataclass(frozen=True)
class Sent:
    """The command in flight, as the codec may need it to decode its replies (a
    no-id protocol's ``BOTTLE 2 X`` line does not repeat the rack it was asked for)."""

    msg_id: int
    cmd: str
    params: dict[str, Any]
    line: bytes


def invalid(reason: str) -> Reply:
    return Reply(kind="invalid", error=reason)


def stray(reason: str, why: dict[str, Any] | None = None) -> Reply:
    """A real reply, but not to the command in flight (see REPLY_KINDS). ``reason`` is
    English; ``why`` the same as ``i18n.message(...)`` for the operator."""
    return Reply(kind="stray", error=reason, why=why)


def scanned(rack: Any, position: Any) -> tuple[str, dict[str, Any]]:
    """A scanned bottle worded by the host, not by the robot: ``Reply.message`` (English)
    and ``Reply.text`` (shown in the operator's language)."""
    return (f"scanned {rack} position {position}",
            message("wire.progress.scanned", rack=rack, position=position))


class CodecError(ValueError):
    """A command this codec cannot put on the wire (e.g. no wire form for it).

    ``str()`` is English (logs). ``reason``: why, for the operator, as
    ``i18n.message(key, **params)``; None (a lab codec's own words) shows ``str()``."""

    def __init__(self, message: str, reason: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class LineCodec:
    """Base class of line codecs. Subclasses set ``name`` and ``uses_ids`` and
    implement ``encode_command``, ``encode_stop`` and ``decode``.

    needs_wire_forms: True when ``encode_command`` builds lines from the command
        table's wire forms (``format_wire``): start-up then refuses a table with a
        command that has parameters but no wire form.
    uses_ids: True when every ack/progress/result carries the id given to
        ``encode_command`` (the driver then matches by id and can recognise a late
        reply to an older command); False when a reply belongs to the one command
        in flight (the driver sends one command at a time either way).
    handshake_command: sent after every open and after a silence timeout; its
        successful result proves the robot is there, ``data["firmware"]`` names it.
        A codec whose handshake echoes a nonce sets ``data["echo"]`` (True: this
        handshake's own answer; False: a firmware that does not echo).
    status_command: for no-id codecs, a command whose result says whether the robot
        is idle (``says_idle``), asked before the handshake once the robot is quiet;
        None: the quiet wait alone decides.
    newline: the line terminator for ``encode_*`` helpers; received lines may end in
        ``\\n`` or ``\\r\\n`` whatever it is.
    """

    name = "codec"
    uses_ids = True
    # True: every command with parameters needs a wire form (checked at start-up).
    needs_wire_forms = False
    handshake_command = "PING"
    status_command: str | None = None
    newline = b"\n"
    max_line = MAX_LINE

    def __init__(self) -> None:
        self.wire_forms: dict[str, str] = {}

    def set_wire_forms(self, forms: dict[str, str]) -> None:
        """Per-command line templates from the command table, e.g.
        ``{"PICK": "PICK {position}"}``. Codecs with their own encoding ignore them."""
        self.wire_forms = dict(forms)

    def encode_command(self, msg_id: int, cmd: str, params: dict[str, Any] | None) -> bytes:
        raise NotImplementedError

    def encode_stop(self, msg_id: int) -> bytes:
        raise NotImplementedError

    def decode(self, line: bytes, sent: Sent | None) -> Reply:
        """Decode one line (without its terminator). Must never raise: a line it
        cannot use is ``invalid(reason)``. ``sent`` is the command in flight."""
        raise NotImplementedError

    def says_idle(self, success: bool, message: str, data: dict[str, Any]) -> bool | None:
        """Whether the result of ``status_command`` says the robot is idle (None: it
        does not say)."""
        return None

    def decode_overlong(self, head: bytes, sent: Sent | None) -> Reply:
        """A line longer than ``max_line`` was dropped; ``head`` is its start. A codec
        that can tell from it that the line was a command's result returns that result
        with ``rejected`` set, so the command fails now rather than timing out."""
        return invalid(f"over-long line (> {self.max_line} bytes)")

    # -- helpers for template-based codecs --------------------------------------------
    def format_wire(self, cmd: str, params: dict[str, Any] | None,
                    template: str | None = None) -> str:
        """The command's wire form (or ``template``, for a codec with its own words)
        with its parameters filled in: lists become ``1,2,3``, whole floats ``100``
        and other numbers their shortest form."""
        template = template if template is not None else self.wire_forms.get(cmd)
        if template is None:
            if params:
                raise CodecError(f"no wire form for {cmd} in the command table "
                                 f"(protocol {self.name})",
                                 message("wire.encode.no_wire_form", cmd=cmd, field="wire",
                                         protocol=self.name))
            return cmd
        values = {name: wire_value(value) for name, value in (params or {}).items()}
        try:
            text = template.format(**values)
        except (KeyError, IndexError, ValueError) as exc:
            raise CodecError(f"wire form {template!r} of {cmd}: {exc}",
                             message("wire.encode.bad_wire_form", template=repr(template),
                                     field="wire", cmd=cmd, error=str(exc))) from None
        if "\n" in text or "\r" in text:
            raise CodecError(f"{cmd}: a parameter contains a line break",
                             message("wire.encode.line_break", cmd=cmd))
        return text


def wire_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}" if not value.is_integer() else str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(wire_value(v) for v in value)
    return str(value)
