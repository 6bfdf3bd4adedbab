"""How the simulated robot's words look on the wire, one adapter per protocol.

An adapter has ``parse(line) -> Parsed`` for one host line (without its terminator)
and ``format(event, cmd) -> bytes | None`` for one engine event (``None``: this
protocol has no line for it), plus ``newline``, ``stop_result_first`` and
``junk(index, avoid)`` for the "garbage" fault mode. ``cmd`` is the canonical name of
the command the event belongs to, for protocols whose replies name it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from robot.sim.engine import ABORTED, DISPENSE_NEEDS, KNOWN, Parsed

# Sent before each real line in "garbage" mode: every shape the host must survive.
JSON_GARBAGE = [
    b"this is not json\r\n",
    b'{"id": 1, "type": "result", "success": true, "message": "stale"}\r\n',
    b'{"type": "ack", "id": \r\n',
    b"[1, 2, 3]\r\n",
    b'"just a string"\r\n',
    b'{"type": "progress", "id": NaN}\r\n',
    b"\xff\xfe\xfd\r\n",
    b'{"type": "teleport", "id": 5}\r\n',
    b'{"type": "result", "id": true, "success": true}\r\n',
]

# Text junk, each with the command it would validly answer (never sent while that
# command runs: it would end it). No "ERR": any ERR ends the command in flight. No
# well-formed reply to another command either ("OK HOME" during a SCAN): the host
# takes that as the robot being out of step (robot/link/fit.py), as it must.
TEXT_GARBAGE: list[tuple[bytes, str | None]] = [
    (b"hello world\r\n", None),
    (b"OK\r\n", None),
    (b"BOTTLE x\r\n", None),
    (b"\xff\xfe\xfd\r\n", None),
    (b"PONGO\r\n", None),
    (b"BOTTLE 3\r\n", None),
]


class JsonWire:
    """Newline-JSON, as in docs/robot-protocol.md."""

    name = "json"
    newline = b"\n"
    stop_result_first = False

    def parse(self, line: bytes) -> Parsed:
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return Parsed(note="ignored a line that is not JSON")
        if not isinstance(obj, dict):
            return Parsed(note="ignored a line that is not an object")
        msg_id, cmd = obj.get("id"), obj.get("cmd")
        parsed = Parsed(record=obj, msg_id=msg_id, cmd=cmd, params=obj.get("params") or {})
        if cmd == "STOP":
            return parsed
        if not isinstance(msg_id, int) or isinstance(msg_id, bool):
            parsed.note = "ignored a command without an integer id"
        elif cmd not in KNOWN:
            parsed.error = f"unknown command {cmd!r}"
        elif not isinstance(parsed.params, dict):
            parsed.error = "params must be an object"
        return parsed

    def format(self, event: dict[str, Any], cmd: str | None) -> bytes | None:
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()

    def junk(self, index: int, avoid: set[str | None]) -> bytes:
        return JSON_GARBAGE[index % len(JSON_GARBAGE)]


# Canonical command -> text verb, and back.
VERBS = {"PING": "PING", "SCAN_QRCODE": "SCAN", "PICK": "PICK", "PLACE": "PLACE",
         "MOVE_TO": "MOVE", "HOME": "HOME", "GET_STATUS": "STATUS", "DISPENSE": "DISPENSE",
         "STOP": "STOP"}
COMMANDS = {verb: cmd for cmd, verb in VERBS.items()}
_INT = re.compile(r"[-+]?\d+")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _BadParams(ValueError):
    pass


def _int(word: str, why: str) -> int:
    if not _INT.fullmatch(word):
        raise _BadParams(why)
    return int(word)


def _number(word: str, why: str) -> int | float:
    """An int for an integer literal (as a JSON host would have sent it), else a float."""
    if _INT.fullmatch(word):
        return int(word)
    if not _NUMBER.fullmatch(word) or not math.isfinite(float(word)):
        raise _BadParams(why)
    return float(word)


def _text_params(cmd: str, verb: str, args: list[str]) -> dict[str, Any]:
    if cmd in ("PICK", "PLACE"):
        why = f"{verb} needs an integer position"
        if len(args) != 1:
            raise _BadParams(why)
        return {"position": _int(args[0], why)}
    if cmd == "MOVE_TO":
        why = "MOVE needs numbers x y z"
        if len(args) != 3:
            raise _BadParams(why)
        return {k: float(_number(a, why)) for k, a in zip(("x", "y", "z"), args, strict=True)}
    if cmd == "SCAN_QRCODE":
        why = "SCAN needs a rack and positions p1,p2,..."
        if len(args) != 2:
            raise _BadParams(why)
        return {"rack": args[0], "positions": [_int(p, why) for p in args[1].split(",")]}
    if cmd == "DISPENSE":
        if len(args) != 2:
            raise _BadParams(DISPENSE_NEEDS)
        # volume_ul > 0 is the engine's rule, checked there for both protocols.
        return {"position": _int(args[0], DISPENSE_NEEDS),
                "volume_ul": _number(args[1], DISPENSE_NEEDS)}
    if cmd == "PING" and len(args) == 1:
        return {"nonce": args[0]}  # echoed in the PONG: the host's handshake names itself
    if args and cmd != "STOP":  # a STOP is never refused, whatever follows it
        raise _BadParams(f"{verb} takes no arguments")
    return {}


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


class TextWire:
    """Plain ASCII words, no ids: a reply belongs to the one command in flight."""

    name = "text"
    newline = b"\r\n"
    stop_result_first = True

    def parse(self, line: bytes) -> Parsed:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return Parsed()  # line noise, not a command: a real firmware drops it
        words = text.split()
        if not words:
            return Parsed()
        verb = words[0].upper()
        cmd = COMMANDS.get(verb)
        record: dict[str, Any] = {"id": None, "cmd": cmd or words[0], "params": {},
                                  "line": text}
        parsed = Parsed(record=record, cmd=record["cmd"], params=record["params"])
        if cmd is None:
            parsed.error = f"unknown command {words[0]}"
            return parsed
        try:
            record["params"] = parsed.params = _text_params(cmd, verb, words[1:])
        except _BadParams as exc:
            parsed.error = f"bad params: {exc}"
        return parsed

    def format(self, event: dict[str, Any], cmd: str | None) -> bytes | None:
        kind = event.get("type")
        if kind == "heartbeat":
            text = "BUSY"
        elif kind == "alarm":
            text = f"ALARM {event.get('message') or 'alarm'}"
        elif kind == "progress":
            item = event.get("item")
            if not item:
                return None
            text = f"BOTTLE {item['position']} {item['code'] or 'EMPTY'}"
        elif kind == "result":
            text = self._result(event, cmd)
        else:
            return None  # ack and log: the text robot has neither
        return text.encode("ascii", "replace")

    @staticmethod
    def _result(event: dict[str, Any], cmd: str | None) -> str:
        if not event.get("success"):
            message = event.get("message") or "error"
            return "ERR ABORTED" if message == ABORTED else f"ERR {message}"
        data = event.get("data") or {}
        verb = VERBS.get(cmd or "", cmd or "")
        if verb == "PING":
            if data.get("nonce"):
                return f"PONG {data['nonce']} {data.get('firmware')}"
            return f"PONG {data.get('firmware')}"
        if verb == "SCAN":
            return f"OK SCAN {data.get('scanned_count', 0)}"
        if verb == "STATUS":
            pos = data.get("position") or {}
            holding = data.get("holding")
            return (f"OK STATUS homed={int(bool(data.get('homed')))} "
                    f"holding={'-' if holding is None else holding} "
                    + " ".join(f"{k}={_num(pos.get(k, 0.0))}" for k in ("x", "y", "z")))
        return f"OK {verb}"

    def junk(self, index: int, avoid: set[str | None]) -> bytes:
        for step in range(len(TEXT_GARBAGE)):
            line, answers = TEXT_GARBAGE[(index + step) % len(TEXT_GARBAGE)]
            if answers is None or answers not in avoid:
                return line
        return TEXT_GARBAGE[0][0]


WIRES: dict[str, type[JsonWire] | type[TextWire]] = {"json": JsonWire, "text": TextWire}


def make_wire(protocol: str) -> JsonWire | TextWire:
    """The adapter for ``protocol``; ValueError for one the simulator does not speak."""
    cls = WIRES.get(protocol)
    if cls is None:
        raise ValueError(f"unknown simulator protocol {protocol!r}; use one of "
                         f"{', '.join(WIRES)}")
    return cls()
