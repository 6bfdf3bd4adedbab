"""Shared fixtures: a real server on a loopback port with the simulator robot on a real pty."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# Before anything imports i18n, and inherited by every server subprocess: a message
# key or placeholder missing from a catalogue fails the test instead of showing the key.
os.environ["ROBOT_I18N_STRICT"] = "1"
# The suite speaks English whatever the developer's locale; tests of Chinese ask for it.
os.environ["ROBOT_LANG"] = "en"

from server.runtime import STATIC_DIR, RobotServer  # noqa: E402
from settings import Settings  # noqa: E402

SCAN = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": [1, 2, 3]}}


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0,
               interval: float = 0.01, message: str = "condition") -> Any:
    """Poll with a deadline (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class Client:
    """A small requests wrapper bound to one server."""

    def __init__(self, server: RobotServer) -> None:
        self.server = server
        self.url = server.url
        self.session = requests.Session()

    def post(self, path: str = "/", body: Any = None, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        if body is not None:
            kw["json"] = body
        return self.session.post(self.url + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.session.get(self.url + path, **kw)

    def submit(self, body: Any = None, **kw: Any) -> str:
        r = self.post("/", SCAN if body is None else body, **kw)
        assert r.status_code == 202, r.text
        return r.json()["task_id"]

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.get(f"/task/{task_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_final(self, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"task {task_id} did not finish: {self.task(task_id)}")
            r = self.get(f"/task/{task_id}", params={"wait": min(remaining, 10)})
            doc = r.json()
            if doc["status"] in ("completed", "failed", "cancelled"):
                return doc

    def status(self) -> dict[str, Any]:
        return self.get("/queue/status").json()


def suite_settings(db: str, **overrides: Any) -> Settings:
    """The suite's server settings on ``db`` (a fast simulator), with ``overrides``."""
    settings = Settings(host="127.0.0.1", port=0, robot="sim", sim_speed=200.0, db=db,
                        robot_timeout=5.0, command_timeouts={}, shutdown_grace=2.0,
                        reconnect_min=0.05, reconnect_max=0.5, robot_settle=0.2)
    return replace(settings, **overrides)


def add_principal(url: str, name: str, role: str, token: str | None = None,
                  kind: str = "person") -> str:
    """Create a principal through POST /admin/users (as ``token``'s admin, or anonymous
    while nothing is set up); its token."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    r = requests.post(url + "/admin/users", json={"name": name, "role": role, "kind": kind},
                      headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def stop_server(server: RobotServer) -> None:
    """``server.stop()`` without waiting out its accept loop's poll interval (0.2 s, at
    every test's teardown): while the loop still runs, a connection wakes it at once."""
    if server.httpd is None:
        server.stop()
        return
    address = server.address
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            server.stop()
        except BaseException as exc:  # raised here, in the caller's thread
            errors.append(exc)

    stopper = threading.Thread(target=stop, name="test-server-stop")
    stopper.start()
    stopper.join(0.002)
    while stopper.is_alive() and server.httpd is not None:  # None: no longer listening
        try:
            socket.create_connection(address, timeout=1).close()
        except OSError:
            pass
        stopper.join(0.005)
    stopper.join()
    if errors:
        raise errors[0]


@pytest.fixture
def make_server(tmp_path) -> Iterator[Callable[..., RobotServer]]:
    """Start servers with overridable settings; all are stopped at teardown."""
    started: list[RobotServer] = []

    def factory(*, static_dir: str | None = STATIC_DIR, **overrides: Any) -> RobotServer:
        # One server per database (the instance lock): a server started while another
        # one runs gets its own file; one started after a stop reuses the first.
        in_use = {s.settings.db for s in started if s.lock is not None}
        db, n = str(tmp_path / "tasks.db"), 1
        while db in in_use:
            n += 1
            db = str(tmp_path / f"tasks-{n}.db")
        server = RobotServer(suite_settings(**{"db": db, **overrides}), static_dir=static_dir)
        server.start()
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        stop_server(server)


@pytest.fixture
def text_sim(tmp_path) -> Iterator[Any]:
    """A robot whose firmware speaks the text protocol, on a real pty the test can
    unplug; a bottle every 0.05 s."""
    from robot.sim.simulator import RobotSimulator

    sim = RobotSimulator(20.0, link_path=str(tmp_path / "robot"), heartbeat_s=0.05,
                         protocol="text")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def server(make_server) -> RobotServer:
    return make_server()


@pytest.fixture
def client(server) -> Client:
    return Client(server)


@pytest.fixture
def scan_file(tmp_path) -> str:
    path = tmp_path / "SCAN_QR_CODE_command.json"
    with open(os.path.join(ROOT, "SCAN_QR_CODE_command.json"), encoding="utf-8") as src:
        path.write_text(src.read(), encoding="utf-8")
    json.loads(path.read_text(encoding="utf-8"))
    return str(path)


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    """Server processes (tests/proc.py's ServerProcess) a test starts: stopped at teardown."""
    started: list[Any] = []
    yield started
    for s in started:
        s.stop()


@pytest.fixture
def receivers() -> Iterator[list[Any]]:
    """Webhook receivers (tests/webhook_receiver.py) a test makes: closed at teardown."""
    made: list[Any] = []
    yield made
    for receiver in made:
        receiver.close()


def pytest_collection_finish(session: pytest.Session) -> None:
    """The 55 s long-poll through nginx (tests/proxy.py) starts now, if its test is
    selected, and waits while the other tests run; the test then reads its answer."""
    from tests.proxy import start_early_long_poll

    if not session.config.option.collectonly:
        start_early_long_poll(session.items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.proxy import stop_early_long_poll

    stop_early_long_poll()
