"""The built-in protocols pass the codec contract (tests/robot_contract.py) on the
built-in simulator, over a real pty reached through a symlink (like /dev/serial/by-id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robot import RobotSimulator
from tests.robot_contract import RobotContract


class _Builtin(RobotContract):
    def make_simulator(self, tmp_path: Path) -> Any:
        return RobotSimulator(1000.0, link_path=str(tmp_path / "robot"), heartbeat_s=0.05,
                              protocol=self.protocol)


class TestJsonContract(_Builtin):
    protocol = "json"


class TestTextContract(_Builtin):
    protocol = "text"
