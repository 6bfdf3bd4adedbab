"""The soaks' server and shared helpers: `python main.py serve` as a subprocess that can be
kill -9'd and restarted on the same DB and port, the simulator on a pty, request params
unique per (client, k), the stderr progress log and copying server logs out of the temp dir.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from common import HOST, PYTHON, ROOT, http_request

SOAK_FINAL = ("completed", "failed", "cancelled")
SOAK_TIMEOUT = (2.0, 10.0)  # connect, read


# -- the real `main.py serve` as a subprocess ------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def run_bounded(fn: Any, timeout: float) -> bool:
    """Call fn() in a daemon thread; False if it did not return within `timeout` s (a
    clean-up that hangs must not hang the bench with it)."""
    thread = threading.Thread(target=fn, name="bench-bounded", daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


class MainServer:
    """`python main.py serve` on a fixed loopback port, restartable on the same DB.

    Output goes to a file, never to an undrained pipe: a chatty server would block on it.
    BENCH_SERVER_ROOT runs another checkout's main.py, as for bench/serve.py.
    """

    def __init__(self, args: Sequence[str], port: int, out_path: str) -> None:
        self.args = [PYTHON, "main.py", "serve", "--host", HOST, "--port", str(port), *args]
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.out_path = out_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=os.environ.get("BENCH_SERVER_ROOT") or ROOT,
                                         stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1

    def wait_health(self, timeout: float = 30.0) -> float:
        """Poll GET /health until it answers at all (200 or 503); the seconds it took.
        Raises RuntimeError if the process exits or the deadline passes."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc is not None else None
                raise RuntimeError(f"server exited with {code}; see {self.out_path}")
            try:
                status, _ = http_request(self.port, "GET", "/health", timeout=1.0)
                if status in (200, 503):
                    return time.monotonic() - t0
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no /health answer within {timeout:g} s")
            time.sleep(0.02)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` s; safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# -- soak helpers (crash, hostile, mixup) ----------------------------------------------------
def params_for(client: int, k: int) -> dict[str, int]:
    """Unique per (client, k) and inside MOVE_TO's -1000..1000 bounds."""
    return {"x": k % 2001 - 1000, "y": client, "z": k // 2001}


def ident(params: Any) -> tuple[float, ...] | None:
    try:
        return tuple(float(params[a]) for a in ("x", "y", "z"))
    except (KeyError, TypeError, ValueError):
        return None


def start_sim(tmp: str, speed: float) -> Any:
    """The soak's simulator: a pty behind a symlink, quick heartbeats."""
    from robot.sim.simulator import RobotSimulator

    sim = RobotSimulator(speed, link_path=os.path.join(tmp, "robot"), heartbeat_s=0.1)
    sim.start()
    return sim


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def keep_logs(tmp: str, dest: str | None, label: str) -> None:
    """Copy the server's output and log files out of the temp dir before it goes."""
    if not dest:
        return
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(tmp):
        if name.startswith(("server.log", "server.out")):
            shutil.copy(os.path.join(tmp, name), os.path.join(dest, f"{label}-{name}"))
