"""Helpers to run the server and the standalone simulator as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import requests

from tests.conftest import ROOT, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 20.0, *,
                 statuses: tuple[int, ...] = (200,)) -> None:
    """Poll GET /health until it answers one of `statuses`; fail at once if `proc` exits."""
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            return requests.get(url + "/health", timeout=1).status_code in statuses
        except requests.ConnectionError:
            return False
    wait_until(up, timeout, 0.05, "server start")


def end(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM unless it has ended; killed if it does not stop within `timeout`. For a
    process whose output a reader thread collects (sigterm reads it itself)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def sigterm(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    """SIGTERM and the process's output; killed if it does not stop within `timeout`."""
    try:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out or ""


class SimulatorProcess:
    """`python -m robot.sim` in its own process, reachable through a symlink."""

    def __init__(self, tmp_path: Any, speed: float = 20.0, *extra: str) -> None:
        self.link = str(tmp_path / "robot-port")
        self.record = str(tmp_path / "robot-record.jsonl")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "robot.sim", "--speed", str(speed), "--link", self.link,
             "--record", self.record, *extra], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        wait_until(lambda: os.path.islink(self.link) or os.path.exists(self.link), 10,
                   message="simulator pty link")

    def received(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.record):
            return []
        with open(self.record, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ServerProcess:
    """`python main.py serve` as a subprocess on a free loopback port."""

    def __init__(self, db: str, robot: str, *extra: str, mode: str = "queue",
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "main.py", "serve", "--mode", mode, "--host", "127.0.0.1",
                     "--port", str(self.port), "--robot", robot, "--db", db, *extra]
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 15.0) -> None:
        wait_healthy(self.url, self.proc, timeout, statuses=(200, 503))

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=kw.pop("timeout", 30), **kw)

    def task(self, task_id: str) -> dict[str, Any]:
        return self.get(f"/task/{task_id}").json()

    def wait_final(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_until(lambda: (d := self.get(f"/task/{task_id}", params={"wait": 5}).json())
                          ["status"] in ("completed", "failed", "cancelled") and d, timeout,
                          message=f"task {task_id} final")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


def scan(rack: str, positions: list[int] | None = None) -> dict[str, Any]:
    return {"cmd_type": "SCAN_QRCODE",
            "params": {"rack": rack, "positions": positions or [1, 2, 3]}}
