"""Robot link: serial driver, wire protocol and a simulator (pty or loopback TCP)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from robot.driver import CommandOutcome, RobotLink, RobotLinkError
from robot.sim_channels import resolve_transport

if TYPE_CHECKING:
    from robot.simulator import RobotSimulator

__all__ = ["CommandOutcome", "RobotLink", "RobotLinkError", "RobotSimulator", "list_ports",
           "resolve_transport", "start_simulator"]


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
            for p in sorted(tools.comports(), key=lambda p: _natural(p.device))]


def _natural(name: str) -> list[Any]:
    """Sort key putting COM3 before COM10 and ttyUSB2 before ttyUSB10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def start_simulator(speed: float, transport: str | None = "auto",
                    **options: Any) -> RobotSimulator:
    """Start the built-in simulator on a pty or, where there is none (Windows) or when
    asked, on a loopback TCP port. RobotLinkError (one line) if it cannot start."""
    from robot.simulator import RobotSimulator

    try:
        # RobotSimulator resolves "auto" and refuses a transport this system lacks.
        simulator = RobotSimulator(speed=speed, transport=transport or "auto", **options)
        simulator.start()
    except (OSError, ValueError) as exc:
        raise RobotLinkError(f"cannot start the built-in simulator: {exc}") from exc
    return simulator
