"""One way to build the robot side for `serve`, `run` and `check`: the protocol
codec, the built-in simulator when the port is ``sim``, and the link."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from robot.codecs import CodecLoadError, LineCodec, builtin_codecs, load_codec
from robot.link.driver import RobotLink
from robot.link.outcome import RobotLinkError

if TYPE_CHECKING:
    from robot.sim.simulator import RobotSimulator


@dataclass
class RobotSetup:
    link: RobotLink
    simulator: RobotSimulator | None = None

    def stop(self) -> None:
        """Link first (it may still be writing STOP), then the simulator."""
        self.link.stop()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None


def make_codec(protocol: str, wire_forms: dict[str, str] | None = None,
               commands_with_params: list[str] | tuple[str, ...] = ()) -> LineCodec:
    """The codec for ``protocol`` (a built-in name or ``package.module:ClassName``) with
    the command table's wire forms. RobotLinkError (one line) if it cannot be used,
    including a command with parameters that a wire-form codec could not send."""
    try:
        codec = load_codec(protocol)
    except CodecLoadError as exc:
        raise RobotLinkError(exc.code, exc.params) from None
    forms = wire_forms or {}
    missing = [name for name in commands_with_params if name not in forms]
    if codec.needs_wire_forms and missing:
        raise RobotLinkError("protocol_needs_wire_forms",
                             {"protocol": protocol, "commands": ", ".join(missing),
                              "field": "wire"})
    codec.set_wire_forms(forms)
    return codec


def build_robot(port: str, codec: LineCodec, *, protocol: str = "json",
                baudrate: int = 115200, sim_speed: float = 1.0, sim_transport: str = "auto",
                sim_options: dict[str, Any] | None = None,
                **link_options: Any) -> RobotSetup:
    """The simulator if ``port`` is ``sim`` (speaking ``protocol``, the spec ``codec``
    came from) and a link that is not started yet. RobotLinkError (one line) if the
    simulator cannot start or cannot speak that protocol."""
    simulator = None
    url = port
    if port == "sim":
        if protocol not in builtin_codecs():
            raise RobotLinkError("sim_protocol", {"protocols": ", ".join(builtin_codecs()),
                                                  "protocol": protocol, "flag": "--robot"})
        simulator = start_simulator(sim_speed, sim_transport, protocol=protocol,
                                    **(sim_options or {}))
        url = simulator.path
    return RobotSetup(RobotLink(url, baudrate, codec=codec, **link_options), simulator)


def open_robot(port: str, protocol: str, *, wire_forms: dict[str, str] | None = None,
               commands_with_params: list[str] | tuple[str, ...] = (),
               baudrate: int = 115200, sim_speed: float = 1.0, sim_transport: str = "auto",
               sim_options: dict[str, Any] | None = None,
               **link_options: Any) -> RobotSetup:
    """``make_codec`` and ``build_robot`` in one call: the robot side on ``port``
    speaking ``protocol``, its link not started yet. RobotLinkError (one line) if the
    protocol, the command table's wire forms or the simulator cannot be used."""
    codec = make_codec(protocol, wire_forms, commands_with_params)
    return build_robot(port, codec, protocol=protocol, baudrate=baudrate, sim_speed=sim_speed,
                       sim_transport=sim_transport, sim_options=sim_options, **link_options)


def start_simulator(speed: float, transport: str | None = "auto",
                    **options: Any) -> RobotSimulator:
    """Start the built-in simulator on a pty or, where there is none (Windows) or when
    asked, on a loopback TCP port. RobotLinkError (one line) if it cannot start."""
    from robot.sim.simulator import RobotSimulator

    try:
        # RobotSimulator resolves "auto" and refuses a transport this system lacks.
        simulator = RobotSimulator(speed=speed, transport=transport or "auto", **options)
        simulator.start()
    except (OSError, ValueError) as exc:
        raise RobotLinkError("sim_start_failed", {"error": str(exc)}) from exc
    return simulator
