"""Robot link: serial driver, protocol codecs and a simulator (pty or loopback TCP)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from robot.codecs import CodecLoadError, LineCodec, load_codec
from robot.factory import RobotSetup, build_robot, make_codec, open_robot, start_simulator
from robot.link.driver import CommandOutcome, RobotLink, RobotLinkError
from robot.link.outcome import Fault
from robot.sim.channels import resolve_transport

if TYPE_CHECKING:
    from robot.sim.simulator import RobotSimulator

__all__ = ["CodecLoadError", "CommandOutcome", "Fault", "LineCodec", "RobotLink",
           "RobotLinkError", "RobotSetup", "RobotSimulator", "build_robot", "list_ports",
           "load_codec", "make_codec", "open_robot", "resolve_transport", "start_simulator"]


def __getattr__(name: str) -> Any:
    # Imported lazily: `import robot` (every server start) need not load the simulator,
    # and `python -m robot.sim.simulator` does not find it already imported (runpy warns).
    if name == "RobotSimulator":
        from robot.sim.simulator import RobotSimulator

        return RobotSimulator
    raise AttributeError(f"module 'robot' has no attribute {name!r}")


def list_ports() -> list[dict[str, Any]]:
    """Serial ports present on this machine: device, description, hwid."""
    from serial.tools import list_ports as tools

    return [{"device": p.device, "description": p.description, "hwid": p.hwid}
            for p in sorted(tools.comports(), key=lambda p: _natural(p.device))]


def _natural(name: str) -> list[Any]:
    """Sort key putting COM3 before COM10 and ttyUSB2 before ttyUSB10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
