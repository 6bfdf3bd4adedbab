"""client/api.py (in process) and `main.py submit/status/cancel/tasks` (as subprocesses)
against a real server with the simulator robot."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from client.api import (
    LONG_POLL_S,
    RobotClient,
    RobotConnectionError,
    RobotHTTPError,
    RobotTimeoutError,
)
from tests.conftest import ROOT, SCAN, wait_until
from tests.proc import free_port

SLOW_SCAN = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "B", "positions": [1, 2, 3]}}


def _main_has_client_commands() -> bool:
    import main

    for action in main.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "submit" in action.choices
    return False


needs_cli = pytest.mark.skipif(
    not _main_has_client_commands(),
    reason="main.py does not have the submit/status/cancel/tasks subcommands yet "
           "(the lead's client/cli.py wiring patch is not applied)")


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("ROBOT_API_TOKEN", "ROBOT_SERVER_URL")}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**full_env, **(env or {})})


def cli_popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def scan_commands(server: Any) -> list[dict[str, Any]]:
    return [c for c in server.simulator.commands() if c.get("cmd") == "SCAN_QRCODE"]


class DroppingProxy:
    """A loopback proxy: forwards every request to the server, but for the first request
    of `drop_method` it cuts the client's connection after the server has answered (the
    reply is lost)."""

    def __init__(self, upstream_url: str, drop_method: str = "POST") -> None:
        self.drop_method = drop_method
        host, port = upstream_url.split("//")[1].split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.posts: list[dict[str, str]] = []  # headers of every POST seen
        self.dropped = 0
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            body += conn.recv(65536)
        return head + b"\r\n\r\n" + body

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = self._read_request(conn)
            if not request:
                return
            head = request.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            # One request per connection: urllib sends Connection: close.
            with socket.create_connection(self.upstream) as up:
                up.sendall(request)
                reply = b""
                while chunk := up.recv(65536):
                    reply += chunk
            if head[0].startswith(self.drop_method + " "):
                headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
                with self._lock:
                    self.posts.append(headers)
                    drop = self.dropped == 0
                    if drop:
                        self.dropped += 1
                if drop:
                    return  # the server made the task; the client never hears of it
            conn.sendall(reply)

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept(); its fd number is then
        # reused by the next socket (a later test's server), from which that thread once
        # took a connection and dropped it. shutdown() wakes it; it ends before we go on.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected-style on this platform: close() below still ends it
        self.listener.close()
        self._acceptor.join(5)
        assert not self._acceptor.is_alive(), "the proxy's accept thread did not end"


@pytest.fixture
def proxy(server):
    p = DroppingProxy(server.url)
    yield p
    p.close()


# -- the Python client ----------------------------------------------------------------------
def test_client_submit_and_wait_completed(server) -> None:
    client = RobotClient(server.url)
    accepted = client.submit(SCAN)
    assert accepted["status"] in ("pending", "running") and accepted["replayed"] is False
    task = client.wait(accepted["task_id"], timeout=20)
    assert task["status"] == "completed" and task["result"]["scanned_count"] == 3
    assert client.long_poll is not False  # never fell back to polling


def test_dropped_reply_is_retried_with_the_same_key_and_makes_one_task(server, proxy) -> None:
    client = RobotClient(proxy.url, backoff=0.01)
    task = client.submit(SCAN, wait=True, timeout=20)
    assert task["status"] == "completed"
    assert proxy.dropped == 1 and len(proxy.posts) == 2
    keys = {h.get("Idempotency-Key") for h in proxy.posts}
    assert len(keys) == 1 and None not in keys
    status = RobotClient(server.url).queue_status()
    assert status["total_tasks"] == 1 and status["completed_tasks"] == 1
    assert len(scan_commands(server)) == 1


def test_wait_survives_a_dropped_reply(server) -> None:
    proxy = DroppingProxy(server.url, drop_method="GET")
    try:
        client = RobotClient(proxy.url, backoff=0.01)
        task_id = RobotClient(server.url).submit(SCAN)["task_id"]
        task = client.wait(task_id, timeout=20)
        assert task["status"] == "completed" and proxy.dropped == 1
    finally:
        proxy.close()


def test_every_submit_has_a_fresh_key(server, proxy) -> None:
    client = RobotClient(proxy.url, backoff=0.01)
    first = client.submit(SCAN)  # its first attempt is the dropped one
    second = client.submit(SCAN)
    assert first["task_id"] != second["task_id"]
    assert first["replayed"] is True and second["replayed"] is False
    assert len({h["Idempotency-Key"] for h in proxy.posts}) == 2


def test_http_error_carries_the_servers_message(server) -> None:
    client = RobotClient(server.url)
    with pytest.raises(RobotHTTPError) as info:
        client.submit({"cmd_type": "DANCE"})
    assert info.value.status == 422 and "DANCE" in info.value.message
    assert info.value.body["success"] is False
    with pytest.raises(RobotHTTPError) as info:
        client.task("nope")
    assert info.value.status == 404


def test_connection_refused_is_retried_with_backoff_then_raised() -> None:
    client = RobotClient(f"http://127.0.0.1:{free_port()}", retries=3, backoff=0.5)
    delays: list[float] = []
    client.sleep = delays.append
    with pytest.raises(RobotConnectionError, match="Refused"):
        client.submit(SCAN)
    assert delays == [0.5, 1.0, 2.0]


def test_wait_times_out_with_the_last_state(make_server) -> None:
    server = make_server(sim_speed=2.0)
    client = RobotClient(server.url)
    task_id = client.submit(SLOW_SCAN)["task_id"]
    with pytest.raises(RobotTimeoutError) as info:
        client.wait(task_id, timeout=0.5)
    assert info.value.task["status"] in ("pending", "running")
    client.cancel(task_id)
    assert client.wait(task_id, timeout=20)["status"] == "cancelled"


def test_token_is_sent(make_server) -> None:
    server = make_server(api_token="s3cret")
    with pytest.raises(RobotHTTPError) as info:
        RobotClient(server.url).queue_status()
    assert info.value.status == 401 and "authentication" in info.value.message
    assert RobotClient(server.url, token="s3cret").queue_status()["total_tasks"] == 0


def test_pause_resume_and_emergency_stop(make_server) -> None:
    server = make_server(sim_speed=2.0)
    client = RobotClient(server.url)
    assert client.pause("lunch")["paused"] is True
    assert client.queue_status()["pause_reason"] == "lunch"
    assert client.resume()["paused"] is False
    task_id = client.submit(SLOW_SCAN)["task_id"]
    wait_until(lambda: client.task(task_id)["status"] == "running", 10, message="running")
    stopped = client.stop()
    assert stopped["stop_sent"] is True and stopped["paused"] is True
    assert client.wait(task_id, timeout=20)["status"] == "cancelled"
    client.resume()


class _OldServer(BaseHTTPRequestHandler):
    """A server without ?wait=: answers at once; optionally rejects the parameter."""

    reject_wait = False
    polls = 0

    def do_GET(self) -> None:  # noqa: N802
        cls = type(self)
        if "wait=" in self.path and cls.reject_wait:
            self._reply(400, {"success": False, "message": "unknown parameter wait"})
            return
        cls.polls += 1
        status = "completed" if cls.polls >= 3 else "running"
        self._reply(200, {"task_id": "t1", "status": status, "result": None})

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("reject_wait", [False, True])
def test_wait_falls_back_to_polling_every_2_s_on_a_server_without_wait(reject_wait) -> None:
    handler = type("Handler", (_OldServer,), {"reject_wait": reject_wait, "polls": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = RobotClient(f"http://127.0.0.1:{httpd.server_address[1]}")
        delays: list[float] = []
        client.sleep = delays.append
        task = client.wait("t1", timeout=60)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert task["status"] == "completed" and client.long_poll is False
    assert delays == [2.0, 2.0]


# -- main.py submit / status / cancel / tasks -------------------------------------------------
@needs_cli
def test_cli_submit_wait_completed_exit_0(server, scan_file) -> None:
    out = cli("submit", scan_file, "--url", server.url, "--wait", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    task = json.loads(out.stdout)
    assert task["status"] == "completed" and task["result"]["scanned_count"] == 3
    assert f"task {task['task_id']} completed in" in out.stderr
    assert "3/3" in out.stderr  # progress lines (not a terminal: one per change)


@needs_cli
def test_cli_submit_wait_failed_exit_1(server, scan_file) -> None:
    server.simulator.set_fault("fail")
    out = cli("submit", scan_file, "--url", server.url, "--wait", "--timeout", "30")
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)["status"] == "failed"
    assert "simulated failure" in out.stderr


@needs_cli
def test_cli_submit_wait_cancelled_exit_3(make_server, scan_file) -> None:
    server = make_server(sim_speed=2.0)  # 10 s per bottle: it is still running when cancelled
    proc = cli_popen("submit", scan_file, "--url", server.url, "--wait", "--timeout", "60")
    try:
        client = RobotClient(server.url)
        running = wait_until(lambda: client.queue_status()["running_task"], 20,
                             message="the CLI's task running")
        canceller = threading.Thread(target=client.cancel, args=(running,))
        canceller.start()
        canceller.join(10)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    assert json.loads(out)["status"] == "cancelled" and json.loads(out)["task_id"] == running


@needs_cli
def test_cli_submit_wait_timeout_exit_4(make_server, scan_file) -> None:
    server = make_server(sim_speed=2.0)
    out = cli("submit", scan_file, "--url", server.url, "--wait", "--timeout", "1")
    assert out.returncode == 4, out.stderr
    assert "timed out after 1 s" in out.stderr and "python main.py cancel" in out.stderr
    running = RobotClient(server.url).queue_status()["running_task"]
    if running:
        RobotClient(server.url).cancel(running)


@needs_cli
def test_cli_connection_error_exit_5(scan_file) -> None:
    out = cli("submit", scan_file, "--url", f"http://127.0.0.1:{free_port()}", "--retries", "1")
    assert out.returncode == 5
    assert "cannot reach the server" in out.stderr and "Traceback" not in out.stderr


@needs_cli
def test_cli_bad_command_exit_2_with_the_servers_message(server, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"cmd_type": "DANCE"}', encoding="utf-8")
    out = cli("submit", str(bad), "--url", server.url)
    assert out.returncode == 2 and "DANCE" in out.stderr and "HTTP 422" in out.stderr
    out = cli("submit", str(tmp_path / "missing.json"), "--url", server.url)
    assert out.returncode == 2 and "missing.json" in out.stderr


@needs_cli
def test_cli_dropped_reply_makes_one_task(server, proxy, scan_file) -> None:
    out = cli("submit", scan_file, "--url", proxy.url, "--wait", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert "already submitted" in out.stderr
    assert proxy.dropped == 1 and len({h["Idempotency-Key"] for h in proxy.posts}) == 1
    assert RobotClient(server.url).queue_status()["total_tasks"] == 1
    assert len(scan_commands(server)) == 1


@needs_cli
def test_cli_status_cancel_and_tasks(make_server, scan_file) -> None:
    server = make_server()
    env = {"ROBOT_SERVER_URL": server.url}
    RobotClient(server.url).pause("hold for the test")
    out = cli("submit", scan_file, env=env)
    assert out.returncode == 0, out.stderr
    task_id = out.stdout.strip()
    assert "queue is paused" in out.stderr

    out = cli("status", task_id, env=env)
    assert out.returncode == 0 and f"task {task_id}: pending" in out.stdout
    assert "queue position 1" in out.stdout
    out = cli("status", env=env)
    assert out.returncode == 0 and "PAUSED (hold for the test)" in out.stdout
    assert "1 pending" in out.stdout
    out = cli("status", "--json", env=env)
    assert json.loads(out.stdout)["pending"] == [task_id]

    out = cli("cancel", task_id, "--reason", "错架 wrong rack", env=env)
    assert out.returncode == 0 and "cancelled" in out.stdout
    # --reason went with the cancel into the audit trail, Chinese intact.
    rows = server.store.audit_page(limit=5, action="task.cancel", target=task_id)
    assert [r["reason"] for r in rows] == ["错架 wrong rack"]
    out = cli("cancel", task_id, env=env)
    assert out.returncode == 6 and "already finished" in out.stderr and "HTTP 409" in out.stderr

    out = cli("tasks", "--status", "cancelled", env=env)
    assert out.returncode == 0 and task_id in out.stdout and "(1 of 1)" in out.stdout
    out = cli("tasks", "--status", "completed", "--json", env=env)
    assert json.loads(out.stdout)["tasks"] == []
    out = cli("status", "nope", env=env)
    assert out.returncode == 6 and "no task nope" in out.stderr


@needs_cli
def test_cli_token_from_env(make_server, scan_file) -> None:
    server = make_server(api_token="s3cret")
    out = cli("status", "--url", server.url)
    assert out.returncode == 6 and "HTTP 401" in out.stderr
    out = cli("submit", scan_file, "--url", server.url, "--wait",
              env={"ROBOT_API_TOKEN": "s3cret"})
    assert out.returncode == 0, out.stderr
    out = cli("tasks", "--url", server.url, "--token", "s3cret")
    assert out.returncode == 0 and "completed" in out.stdout


# -- examples/ ---------------------------------------------------------------------------------
def _example(args: list[str], url: str, tmp_path: Any, token: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
    shutil.copy(os.path.join(ROOT, "SCAN_QR_CODE_command.json"), tmp_path)
    env = {**os.environ, "SERVER": url, "ROBOT_SERVER_URL": url}
    env.pop("ROBOT_API_TOKEN", None)
    if token:
        env["ROBOT_API_TOKEN"] = token
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_better_client_completes(make_server, tmp_path) -> None:
    server = make_server(api_token="s3cret")
    out = _example([sys.executable, os.path.join(ROOT, "examples", "better_client.py")],
                   server.url, tmp_path, token="s3cret")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "✓ completed; scanned: 3" in out.stdout


def test_better_client_reports_failed(server, tmp_path) -> None:
    server.simulator.set_fault("fail")
    out = _example([sys.executable, os.path.join(ROOT, "examples", "better_client.py")],
                   server.url, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "✗ failed: simulated failure" in out.stdout


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")),
                    reason="curl and jq are needed (apt-get install curl jq)")
@pytest.mark.parametrize("fault, code", [(None, 0), ("fail", 1)])
def test_submit_and_wait_sh(make_server, tmp_path, fault, code) -> None:
    server = make_server(api_token="s3cret")
    server.simulator.set_fault(fault)
    out = _example(["bash", os.path.join(ROOT, "examples", "submit_and_wait.sh")], server.url,
                   tmp_path, token="s3cret")
    assert out.returncode == code, out.stdout + out.stderr
    final = json.loads(out.stdout[out.stdout.index("{"):])
    assert final["status"] == ("failed" if fault else "completed")
    assert out.stdout.startswith("Task ID: ")
    assert RobotClient(server.url, token="s3cret").queue_status()["total_tasks"] == 1


def test_wait_adapts_to_a_server_with_a_lower_max_wait(make_server) -> None:
    # The server clamps the client's long-polls to its 0.5 s and says timed_out: the
    # client keeps long-polling (no fallback to 2 s polls, nothing to learn) and asks
    # again until the task is final.
    server = make_server(max_wait=0.5)
    waits: list[float] = []

    class Counting(RobotClient):
        def request(self, method: str, path: str, *args: Any, **kw: Any) -> Any:
            if "?wait=" in path:
                waits.append(float(path.rsplit("=", 1)[1]))
            return super().request(method, path, *args, **kw)

    client = Counting(server.url)
    sleeps: list[float] = []
    client.sleep = sleeps.append
    client.pause()  # the task stays pending through several clamped long-polls
    task_id = client.submit(SCAN)["task_id"]
    result: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(client.wait(task_id, timeout=30)))
    waiter.start()
    wait_until(lambda: len(waits) >= 3, 15, message="three long-polls")
    client.resume()
    waiter.join(30)
    assert result["status"] == "completed" and "timed_out" not in result
    assert client.long_poll is True and client.max_wait == LONG_POLL_S and sleeps == []
    assert all(w > server.app.settings.max_wait for w in waits)  # asked long, answered at 0.5


class _RefusingOldServer(BaseHTTPRequestHandler):
    """A server from before the clamp: a wait above its max_wait (0.5 s) is a 400 that
    states the bound in its fields; a shorter one is held, as a long-poll."""

    waits: list[float] = []

    def do_GET(self) -> None:  # noqa: N802
        waits = type(self).waits
        wait = float(parse_qs(urlsplit(self.path).query)["wait"][0])
        waits.append(wait)
        if wait > 0.5:
            self._reply(400, {"success": False, "code": "query_out_of_range",
                              "message": "query parameter 'wait' is out of range",
                              "param": "wait", "low": 0, "high": 0.5})
            return
        threading.Event().wait(wait)  # the old server's long-poll, not a test's sleep
        status = "completed" if len(waits) >= 4 else "pending"
        self._reply(200, {"task_id": "t1", "status": status, "result": None})

    _reply = _OldServer._reply
    log_message = _OldServer.log_message


def test_wait_learns_the_max_wait_of_an_older_server_that_refuses_longer_waits() -> None:
    handler = type("Handler", (_RefusingOldServer,), {"waits": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = RobotClient(f"http://127.0.0.1:{httpd.server_address[1]}")
        task = client.wait("t1", timeout=60)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert task["status"] == "completed"
    assert client.max_wait == 0.5 and client.long_poll is True
    assert handler.waits[0] == LONG_POLL_S and handler.waits[1:] == [0.5, 0.5, 0.5]
