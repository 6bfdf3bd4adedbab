"""The ``text`` robot protocol: plain ASCII command and reply lines, no ids.

    host -> robot                 robot -> host
    PING <nonce>                  PONG <nonce> <firmware words...>  (or PONG <firmware>)
    SCAN <rack> <p1>,<p2>,...     BOTTLE <position> <code>  (EMPTY: no bottle), then OK SCAN <count>
    PICK <p> / PLACE <p>          OK PICK / OK PLACE
    MOVE <x> <y> <z>              OK MOVE
    HOME                          OK HOME
    STATUS                        OK STATUS <words...>
    STOP (at any moment)          OK STOP at once; the command in progress then ends ERR ABORTED
    while a command runs:         BUSY (about every second)
    ends the command in progress: ERR <message>
    unsolicited fault:            ALARM <message>

Host lines come from each command's wire form in the command table (e.g.
``"SCAN {rack} {positions}"``). A reply belongs to the one command in flight; an
``OK <word>`` whose word is not the command's is a stray reply (the robot is out of
step: robot/link/fit.py), so a late reply to an earlier command cannot finish the current
one. The handshake names itself: ``PING`` carries a nonce (eight hex digits from the
command id) that the firmware echoes, so a late ``PONG`` from an earlier handshake
cannot pass for this one. A firmware that does not echo (``PONG <firmware>``) is
still accepted, with the weaker guarantee docs/robot-adapters.md describes.
"""

from __future__ import annotations

import re
from typing import Any

from i18n import message
from robot.codecs.seam import CodecError, LineCodec, Reply, Sent, invalid, scanned, stray

_NONCE = re.compile(r"[0-9a-f]{8}")
# Words in a STATUS reply that mean the robot is working.
_BUSY_WORDS = frozenset({"BUSY", "RUNNING", "MOVING", "STATE=BUSY", "STATE=RUNNING",
                         "STATE=MOVING"})


def nonce(msg_id: int) -> str:
    """The handshake's nonce for command id ``msg_id``."""
    return f"{msg_id & 0xFFFFFFFF:08x}"


def _verb(line: bytes) -> str:
    return line.split(b" ", 1)[0].strip().decode("ascii", "replace").upper()


class TextCodec(LineCodec):
    name = "text"
    uses_ids = False
    needs_wire_forms = True
    newline = b"\r\n"
    status_command = "GET_STATUS"

    def encode_command(self, msg_id: int, cmd: str, params: dict[str, Any] | None) -> bytes:
        for key, value in (params or {}).items():
            # Words are separated by spaces: "SCAN rack A 1,2" would shift every argument.
            if isinstance(value, str) and any(ch.isspace() for ch in value):
                raise CodecError(f"{cmd}: {key} {value!r} contains a space, which the text "
                                 "protocol cannot carry",
                                 message("wire.encode.space", cmd=cmd, name=key,
                                         value=repr(value)))
        text = self.format_wire(cmd, params)
        if cmd == self.handshake_command:
            text = f"{text} {nonce(msg_id)}"
        try:
            return text.encode("ascii") + self.newline
        except UnicodeEncodeError:
            raise CodecError(f"{cmd}: the text protocol is ASCII only ({text!r})",
                             message("wire.encode.not_ascii", cmd=cmd,
                                     text=repr(text))) from None

    def encode_stop(self, msg_id: int) -> bytes:
        return b"STOP" + self.newline

    def says_idle(self, success: bool, message: str, data: dict[str, Any]) -> bool | None:
        words = {w.upper() for w in (str(data.get("status") or "") + " " + message).split()}
        if words & _BUSY_WORDS:
            return False
        return True if success else None

    def decode(self, line: bytes, sent: Sent | None) -> Reply:
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            return invalid("not ASCII")
        if not text:
            return invalid("empty line")
        word, _, rest = text.partition(" ")
        word, rest = word.upper(), rest.strip()
        expected = _verb(sent.line) if sent is not None else None
        if word == "BUSY":
            return Reply(kind="heartbeat")
        if word == "ALARM":
            # No words of the robot's: None, so the failure says "no message" in the
            # operator's language rather than an English word of ours.
            return Reply(kind="alarm", message=rest or None)
        if word == "OK" and rest.upper().split(" ", 1)[0] == "STOP":
            return Reply(kind="result", success=True, message="STOP完成", to_stop=True)
        if word not in ("PONG", "ERR", "OK", "BOTTLE"):
            return invalid(f"unknown reply {word!r}")
        if sent is None:
            return stray(f"{word} with no command in flight")
        if word == "PONG":
            return self._pong(rest, sent, expected)
        if word == "ERR":
            return Reply(kind="result", success=False, message=rest or None)
        if word == "OK":
            return self._ok(rest, expected)
        return self._bottle(rest, sent, expected)

    def _pong(self, rest: str, sent: Sent, expected: str | None) -> Reply:
        if sent.cmd != self.handshake_command:
            return stray(f"PONG does not answer {expected}",
                         message("wire.stray.does_not_answer", reply="PONG", command=expected))
        first, _, after = rest.partition(" ")
        if first == nonce(sent.msg_id):
            return Reply(kind="result", success=True,
                         data={"firmware": after.strip() or None, "echo": True})
        if _NONCE.fullmatch(first):
            return stray(f"PONG {first} answers an earlier PING (this one is "
                         f"{nonce(sent.msg_id)})",
                         message("wire.stray.old_pong", nonce=first, current=nonce(sent.msg_id)))
        return Reply(kind="result", success=True, data={"firmware": rest or None,
                                                        "echo": False})

    @staticmethod
    def _ok(rest: str, expected: str | None) -> Reply:
        verb, _, detail = rest.partition(" ")
        verb, detail = verb.upper(), detail.strip()
        if not verb:
            return invalid("OK without a command word")
        if verb != expected:
            return stray(f"OK {verb} does not answer {expected}",
                         message("wire.stray.does_not_answer", reply=f"OK {verb}",
                                 command=expected))
        data: dict[str, Any] = {}
        if verb == "SCAN":
            if not detail.isdigit():
                return invalid(f"OK SCAN count is not a number: {detail!r}")
            data["scanned_count"] = int(detail)
        elif verb == "STATUS":
            data["status"] = detail
        elif detail:
            data["detail"] = detail
        return Reply(kind="result", success=True, data=data)

    @staticmethod
    def _bottle(rest: str, sent: Sent, expected: str | None) -> Reply:
        position, _, code = rest.partition(" ")
        code = code.strip()
        if not position.isdigit() or not code or " " in code:
            return invalid("BOTTLE needs <position> <code>")
        if expected != "SCAN":
            return stray(f"BOTTLE during {expected}",
                         message("wire.stray.bottle_during", command=expected))
        rack = sent.params.get("rack")
        positions = sent.params.get("positions")
        item = {"position": int(position), "code": None if code == "EMPTY" else code,
                "rack": rack}
        said, text = scanned(rack, int(position))
        return Reply(kind="progress", item=item,
                     total=len(positions) if isinstance(positions, list) else None,
                     message=said, text=text)
