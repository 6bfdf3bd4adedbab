"""A lab's own robot protocol: G-code-like lines and no ids. Host line, then replies:

    M115 PING, M114 GET_STATUS      ok FIRMWARE_NAME:<name> / ok X:<x> Y:<y> Z:<z>
    G28 HOME, G0 X Y Z MOVE_TO, M951 P<p> PICK, M952 P<p> PLACE: busy: processing..., ok
    M950 R<rack> P<p1>,<p2> SCAN    bottle: <position> <code|none> per bottle, then ok
    M410 STOP, at any moment        the command ends "error: aborted", then M410's own ok
    failure / alarm                 error: <message> / !! <message>
A bare ``ok`` after a command's end is M410's (the driver counts the STOPs it sent).
"""

from typing import Any

from robot.codecs import CodecError, LineCodec, Reply, Sent, invalid

GCODE = {"PING": "M115", "GET_STATUS": "M114", "HOME": "G28", "MOVE_TO": "G0 X{x} Y{y} Z{z}",
         "SCAN_QRCODE": "M950 R{rack} P{positions}", "PICK": "M951 P{position}",
         "PLACE": "M952 P{position}"}


class GcodeCodec(LineCodec):
    name = "gcode"
    uses_ids = False

    def encode_command(self, msg_id: int, cmd: str, params: dict[str, Any] | None) -> bytes:
        if cmd not in GCODE:
            raise CodecError(f"{cmd} has no G-code on this robot (protocol {self.name})")
        text = self.format_wire(cmd, params, GCODE[cmd])  # its own words, not the table's
        # A space would split a word and ";" start a comment: the robot would run less.
        if not text.isascii() or ";" in text or len(text.split()) != len(GCODE[cmd].split()):
            raise CodecError(f"{cmd}: parameters must be ASCII words ({text!r})")
        return text.encode("ascii") + b"\n"

    def encode_stop(self, msg_id: int) -> bytes:
        return b"M410\n"

    def decode(self, line: bytes, sent: Sent | None) -> Reply:
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            return invalid("not ASCII")
        cmd = sent.cmd if sent is not None else None
        if text == "ok" or text.startswith("ok "):
            return self._ok(text[2:].strip(), cmd)
        if text.startswith("!!"):
            return Reply(kind="alarm", message=text[2:].strip() or "alarm")
        word, colon, rest = text.partition(":")
        word, rest = word if colon else "", rest.strip()
        if word == "busy":
            return Reply(kind="heartbeat")
        if word == "error":
            return Reply(kind="result", success=False, message=rest or "error")
        if word == "bottle" and sent is not None and cmd == "SCAN_QRCODE":
            return self._bottle(rest, sent.params)
        return invalid(f"not a reply to {cmd or 'anything'}: {text[:40]!r}")

    @staticmethod
    def _ok(rest: str, cmd: str | None) -> Reply:
        if cmd == "PING":  # named, so a STOP's late bare "ok" is not taken for it
            name = rest.partition("FIRMWARE_NAME:")[2].strip()
            return Reply(kind="result", success=True, data={"firmware": name}) if name else \
                invalid("M115 is answered with ok FIRMWARE_NAME:<name>")
        key = "status" if cmd == "GET_STATUS" else "detail"
        return Reply(kind="result", success=True, data={key: rest} if rest else {})

    @staticmethod
    def _bottle(rest: str, params: dict[str, Any]) -> Reply:
        position, _, code = rest.partition(" ")
        positions, rack, code = params.get("positions") or [], params.get("rack"), code.strip()
        # Whether this scan asked for the position is the link's check (robot/link/fit.py): a
        # late line of another scan fails the command as out of step, never is its bottle.
        if not position.isdigit() or not code:
            return invalid(f"bottle: needs a position and a code: {rest!r}")
        return Reply(kind="progress", total=len(positions), message=f"scanned {rack} {position}",
                     item={"position": int(position), "rack": rack,
                           "code": None if code == "none" else code})
