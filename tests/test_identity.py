"""Device identity for a fleet (issue 33, part 6): `--name` and `--labels` (ROBOT_NAME,
ROBOT_LABELS) in /health, /robot, /metrics (an info metric), the banner and the
dashboard's title; a bad value stops start-up with one line.

One real `python main.py serve --name scanner-2 --labels room=B204,model=XYZ` serves the
HTTP, metrics, banner and browser checks; the rest runs in-process against the real
server (make_server) or through the settings' own parsing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import main
from console.banner import print_banner
from settings import (
    EnvSettingError,
    FlagSettingError,
    Refused,
    device_name,
    environ_values,
    fill_from_environ,
    from_args,
    labels,
)
from tests import test_dashboard as base
from tests.conftest import ROOT, wait_until
from tests.proc import ServerProcess, end

parser = pytest.importorskip("prometheus_client.parser",
                             reason="prometheus_client (requirements-dev.txt) is not installed")

# The browser fixtures of tests/test_dashboard.py (assigned, not imported, so that the
# test functions' parameters of the same name are what pytest fills in).
browser = base.browser
dashboard = base.dashboard
expect = base.expect
T = base.T

NAME, LABELS = "scanner-2", {"room": "B204", "model": "XYZ"}
PROMTOOL = shutil.which("promtool")


def info_samples(text: str) -> list[dict[str, str]]:
    """The label sets of robot_server_info, read by Prometheus's own client parser."""
    found = []
    for family in parser.text_string_to_metric_families(text):
        if family.name == "robot_server_info":
            assert family.type == "gauge" and family.documentation, family
            found += [dict(sample.labels) for sample in family.samples if sample.value == 1]
    return found


class Serving(ServerProcess):
    """A real `main.py serve` whose console output a thread collects as it comes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    db = str(tmp_path_factory.mktemp("identity") / "tasks.db")
    server = Serving(db, "sim", "--name", NAME, "--labels", "room=B204, model=XYZ",
                     "--sim-speed", "50", "--lang", "en")
    try:
        server.wait_ready()
        yield server
    finally:
        end(server.proc)
        server.reader.join(10)


# -- the flags through a real `serve` ------------------------------------------------------
def test_health_and_robot_carry_the_name_and_labels(named: Serving) -> None:
    health = named.get("/health").json()
    assert health["name"] == NAME and health["labels"] == LABELS, health
    assert list(health["labels"]) == ["room", "model"]  # in the order given
    assert {"status", "mode", "worker_alive", "robot", "store"} <= set(health)  # as before
    robot = named.get("/robot").json()
    assert robot["name"] == NAME and robot["labels"] == LABELS, robot
    assert {"connected", "port", "protocol"} <= set(robot)


def test_metrics_have_the_info_metric(named: Serving, tmp_path) -> None:
    reply = named.get("/metrics")
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain")
    assert info_samples(reply.text) == [{"name": NAME, **LABELS}]
    assert 'robot_server_info{name="scanner-2",room="B204",model="XYZ"} 1' in reply.text
    assert "# TYPE robot_server_info gauge" in reply.text
    if PROMTOOL is None:
        pytest.skip("promtool is not on PATH (Debian: apt-get install prometheus); the "
                    "text was checked with prometheus_client's parser only")
    path = tmp_path / "metrics.txt"
    path.write_text(reply.text, encoding="utf-8")
    with open(path, "rb") as fh:
        done = subprocess.run([PROMTOOL, "check", "metrics"], stdin=fh, capture_output=True,
                              text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_banner_names_the_server(named: Serving) -> None:
    wanted = "Name: scanner-2 (room=B204, model=XYZ)"
    wait_until(lambda: wanted in named.lines, 10, message="the banner's identity line")
    assert named.lines.index("Mode: queue mode") < named.lines.index(wanted)


@base.needs_browser
def test_the_dashboard_title_and_header(named: Serving, dashboard: Any) -> None:
    tab = dashboard(named)
    page = tab.open()
    expect(page).to_have_title("scanner-2 · Robot task server", timeout=T)
    header = page.locator("#device-name")
    expect(header).to_have_text("scanner-2 · room=B204, model=XYZ")
    assert "room=B204, model=XYZ" in (header.get_attribute("title") or "")
    page.click('[data-lang="zh"]')  # the switch puts the plain title back: ours follows
    expect(page.locator("#estop-btn")).to_have_text("紧急停止", timeout=T)
    expect(page).to_have_title("scanner-2 · 机器人任务服务器", timeout=T)
    expect(header).to_have_text("scanner-2 · room=B204, model=XYZ")
    assert tab.errors == []


# -- the real server in-process: defaults, escaping, the banner in Chinese -----------------
def test_without_a_name_the_host_name(make_server: Any) -> None:
    server = make_server()
    url = f"http://127.0.0.1:{server.address[1]}"
    health = requests.get(url + "/health", timeout=5).json()
    assert health["name"] == socket.gethostname() and health["labels"] == {}
    text = requests.get(url + "/metrics", timeout=5).text
    assert info_samples(text) == [{"name": socket.gethostname()}]


def test_label_values_are_escaped_and_the_banner_speaks_chinese(make_server: Any,
                                                                capsys: Any) -> None:
    odd = 'say "hi" \\ ok'
    server = make_server(name="扫描仪 2", labels=(("note", odd), ("room", "B204")))
    url = f"http://127.0.0.1:{server.address[1]}"
    text = requests.get(url + "/metrics", timeout=5).text
    assert r'note="say \"hi\" \\ ok"' in text, text
    assert info_samples(text) == [{"name": "扫描仪 2", "note": odd, "room": "B204"}]
    capsys.readouterr()
    print_banner(server, "zh")
    lines = capsys.readouterr().out.splitlines()
    assert f"名称: 扫描仪 2 (note={odd}, room=B204)" in lines, lines


# -- validation: one line at start-up ------------------------------------------------------
def test_names_and_labels_parse() -> None:
    assert device_name("  scanner-2 ") == "scanner-2" and device_name("x" * 64) == "x" * 64
    assert labels("room=B204, model=XYZ,") == (("room", "B204"), ("model", "XYZ"))
    assert labels("") == () and labels("_k=a=b") == (("_k", "a=b"),)
    assert labels("Room_2=三楼 东") == (("Room_2", "三楼 东"),)


@pytest.mark.parametrize(("flag", "value", "reason"), [
    ("name", "", "a name is 1 to 64 printable characters"),
    ("name", "x" * 65, "a name is 1 to 64 printable characters"),
    ("name", "tab\there", "a name is 1 to 64 printable characters"),
    ("labels", "room", '"room" is not key=value'),
    ("labels", "2room=a", 'the label key "2room" must be letters, digits and _, not start '
                          'with a digit or __, and not be "name"'),
    ("labels", "__meta=a", 'the label key "__meta" must'),
    ("labels", "name=a", 'the label key "name" must'),
    ("labels", "room-no=a", 'the label key "room-no" must'),
    ("labels", "楼=a", 'the label key "楼" must'),
    ("labels", "room=", 'the label "room" needs a value of 1 to 100 printable characters'),
    ("labels", "room=" + "x" * 101, 'the label "room" needs a value of 1 to 100'),
    ("labels", "room=B204,room=B205", 'the label "room" is given twice'),
])
def test_a_bad_value_is_refused_with_its_reason(flag: str, value: str, reason: str) -> None:
    with pytest.raises(Refused):
        (device_name if flag == "name" else labels)(value)
    args = main.build_parser().parse_args(["serve", f"--{flag}={value}"])
    with pytest.raises(FlagSettingError) as caught:
        from_args(args)
    assert caught.value.message.startswith(f'--{flag} "{value}" cannot be used: {reason}')
    assert "\n" not in caught.value.message
    assert caught.value.text("zh").startswith(f'无法使用 --{flag} "{value}"：')
    env = "ROBOT_NAME" if flag == "name" else "ROBOT_LABELS"
    if value:  # an empty variable is unset
        with pytest.raises(EnvSettingError) as from_env:
            environ_values({env: value})
        assert from_env.value.message.startswith(
            f'Environment variable {env}="{value}" cannot be used: {reason}')


def test_the_flag_beats_the_variable(monkeypatch: Any) -> None:
    monkeypatch.setenv("ROBOT_NAME", "from-env")
    monkeypatch.setenv("ROBOT_LABELS", "room=B204")
    args = main.build_parser().parse_args(["serve", "--name", "from-flag"])
    fill_from_environ(args)
    s = from_args(args)
    assert (s.name, s.device_name, s.labels) == ("from-flag", "from-flag", (("room", "B204"),))
    monkeypatch.setenv("ROBOT_LABELS", "")  # empty: no labels, as --labels ''
    assert from_args(main.build_parser().parse_args(["serve"])).labels == ()


@pytest.mark.parametrize(("argv", "env", "line"), [
    (["serve", "--mode", "queue", "--labels", "room=B204,room=B205"], {},
     '--labels "room=B204,room=B205" cannot be used: the label "room" is given twice'),
    (["check"], {"ROBOT_LABELS": "__x=1", "ROBOT_LANG": "zh"},
     '无法使用环境变量 ROBOT_LABELS="__x=1"：标签键 “__x” 只能由字母、数字和下划线组成，'
     '不能以数字或 __ 开头，也不能是 “name”'),
])
def test_start_up_stops_with_one_line(argv: list[str], env: dict[str, str], line: str) -> None:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("ROBOT_") or k == "ROBOT_I18N_STRICT"}
    done = subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, text=True,
                          encoding="utf-8", capture_output=True, timeout=60,
                          env={**environ, "ROBOT_LANG": "en", "PYTHONIOENCODING": "utf-8",
                               **env}, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [line]
