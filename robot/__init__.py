"""Robot link: serial driver, wire protocol and a pty simulator."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from robot.driver import CommandOutcome, RobotLink, RobotLinkError

if TYPE_CHECKING:
    from robot.simulator import RobotSimulator

__all__ = ["CommandOutcome", "RobotLink", "RobotLinkError", "RobotSimulator", "list_ports",
           "start_simulator"]


def __getattr__(name: str) -> Any:
    # Imported lazily so `python -m robot.simulator` does not find the module already
    # imported by the package (runpy warns about that).
    if name == "RobotSimulator":
        from robot.simulator import RobotSimulator

        return RobotSimulator
    raise AttributeError(f"module 'robot' has no attribute {name!r}")


def list_ports() -> list[dict[str, Any]]:
    """Serial ports present on this machine: device, description, hwid."""
    from serial.tools import list_ports as tools

    return [{"device": p.device, "description": p.description, "hwid": p.hwid}
            for p in sorted(tools.comports(), key=lambda p: p.device)]


def start_simulator(speed: float, **options: Any) -> RobotSimulator:
    """Start the built-in simulator; RobotLinkError (one line) where there is no pty."""
    if os.name != "posix":
        raise RobotLinkError("the built-in simulator needs a POSIX pseudo-terminal (Linux, "
                             "macOS); on this system give the robot's port, e.g. --robot COM3")
    from robot.simulator import RobotSimulator

    simulator = RobotSimulator(speed=speed, **options)
    simulator.start()
    return simulator
