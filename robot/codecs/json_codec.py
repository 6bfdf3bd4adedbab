"""The ``json`` robot protocol (docs/robot-protocol.md): one JSON object per line,
every reply carrying the id of its command."""

from __future__ import annotations

import json
from typing import Any

from robot.codecs.seam import MAX_LINE, LineCodec, Reply, Sent, invalid, scanned
from shared.jsonbounds import MAX_DEPTH, text_too_deep, top_level_fields

MESSAGE_KINDS = ("ack", "progress", "result", "heartbeat", "log", "alarm")
# Replies to a command must carry its id; heartbeats, logs and alarms are unsolicited.
_NEEDS_ID = ("ack", "progress", "result")


def encode_json_command(msg_id: int, cmd: str, params: dict[str, Any] | None = None) -> bytes:
    """One host -> robot line: compact JSON, UTF-8 and a newline."""
    obj: dict[str, Any] = {"id": msg_id, "cmd": cmd}
    if params is not None:
        obj["params"] = params
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python, but true is not an id or a count.
    return isinstance(value, int) and not isinstance(value, bool)


def parse_json_line(line: bytes) -> Reply:
    """Parse and validate one line (without its newline). Never raises."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return invalid("not UTF-8")
    if not text.strip():
        return invalid("empty line")
    if text_too_deep(text):
        return _refused(text, "too_deep", f"nested deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return invalid(f"not JSON ({exc})")
    if not isinstance(obj, dict):
        return invalid(f"not a JSON object ({type(obj).__name__})")
    kind = obj.get("type")
    if kind not in MESSAGE_KINDS:
        return invalid(f"unknown type {kind!r}")
    msg_id = obj.get("id")
    if msg_id is not None and not _is_int(msg_id):
        return invalid(f"bad id {msg_id!r}")
    if msg_id is None and kind in _NEEDS_ID:
        return invalid(f"{kind} without id")
    message = obj.get("message")
    if message is not None and not isinstance(message, str):
        return invalid("message is not a string")
    reply = Reply(kind=kind, id=msg_id, message=message)
    if kind == "progress":
        for key in ("done", "total"):
            if obj.get(key) is not None and not _is_int(obj[key]):
                return invalid(f"progress {key} is not an integer")
        if obj.get("item") is not None and not isinstance(obj["item"], dict):
            return invalid("progress item is not an object")
        reply.done, reply.total, reply.item = obj.get("done"), obj.get("total"), obj.get("item")
        item = reply.item
        if message is None and item is not None and "rack" in item and "position" in item:
            # A scanned bottle the robot did not describe (a robot's own message stays
            # as it said it).
            reply.message, reply.text = scanned(item["rack"], item["position"])
    elif kind == "result":
        if not isinstance(obj.get("success"), bool):
            return invalid("result without boolean success")
        if obj.get("data") is not None and not isinstance(obj["data"], dict):
            return invalid("result data is not an object")
        reply.success, reply.data = obj["success"], obj.get("data") or {}
    return reply


def _refused(text: str, why: str, reason: str) -> Reply:
    """A line the server will not take: the result of a command if it says so (that
    command then fails at once, ``why`` in ``rejected``), else a skipped line."""
    fields = top_level_fields(text)
    if fields.get("type") == "result" and _is_int(fields.get("id")):
        return Reply(kind="result", id=fields["id"], success=False, rejected=why)
    return invalid(reason)


class JsonCodec(LineCodec):
    """This project's firmware protocol: ids on every reply, results as JSON objects."""

    name = "json"
    uses_ids = True

    def encode_command(self, msg_id: int, cmd: str, params: dict[str, Any] | None) -> bytes:
        return encode_json_command(msg_id, cmd, params)

    def encode_stop(self, msg_id: int) -> bytes:
        return encode_json_command(msg_id, "STOP", None)

    def decode(self, line: bytes, sent: Sent | None) -> Reply:
        return parse_json_line(line)

    def decode_overlong(self, head: bytes, sent: Sent | None) -> Reply:
        return _refused(head.decode("utf-8", errors="replace"), "too_long",
                        f"line longer than {self.max_line or MAX_LINE} bytes")
