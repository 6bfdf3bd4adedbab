"""Real nginx and Caddy in front of a test server, as foreground subprocesses.

The site configurations are templates here and nowhere else: docs/deploy.md quotes
the rendered `NGINX_SITE`, `NGINX_TLS_SITE` and `CADDY_SITE` verbatim, and
tests/test_reverse_proxy.py runs exactly those (and checks the docs still match).
Placeholders are @NAME@ words, since nginx and Caddy both use `$` and braces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import wait_until
from tests.proc import ServerProcess, free_port

# Lines every documented nginx server block shares (indented for a server {} block).
_NGINX_PROXY_LINES = """\
    # HTTP/1.1 to the server, without "Connection: close": event streams and
    # long-polls are passed through as they come.
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    # $http_host is the name *and port* the browser used. The server's Host check
    # reads X-Forwarded-Host (from a trusted proxy), and its same-origin test
    # compares the page's Origin, which carries the port, with it. ($host would
    # drop the port.)
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    # Long-polls (?wait=) are answered within 55 s: the default
    # proxy_read_timeout of 60 s suffices. In --mode sync POST / is answered
    # only when the command has ended: raise it above the longest command, e.g.
    # proxy_read_timeout 15m;

    location / {
        proxy_pass http://@UPSTREAM@;
    }

    # Server-sent events (the dashboard's live view): pass each event at once.
    # The server sends a keep-alive comment every 15 s, inside the 60 s timeout.
    location = /events {
        proxy_pass http://@UPSTREAM@;
        proxy_buffering off;
    }
}
"""

NGINX_SITE = """\
server {
    listen @LISTEN@;
    server_name robot.lab.example;

""" + _NGINX_PROXY_LINES

NGINX_TLS_SITE = """\
server {
    listen @LISTEN@ ssl;
    server_name robot.lab.example;
    ssl_certificate @CERT@;
    ssl_certificate_key @KEY@;

    # $scheme is "https" here: X-Forwarded-Proto tells the server so.

""" + _NGINX_PROXY_LINES

# What nginx does with no proxy_set_header at all: Host is the upstream's
# 127.0.0.1:PORT, HTTP/1.0 with "Connection: close", no X-Forwarded-*.
NGINX_BARE_SITE = """\
server {
    listen @LISTEN@;
    location / {
        proxy_pass http://@UPSTREAM@;
    }
}
"""

# The block most tutorials show: $host has no port, so neither Host nor
# X-Forwarded-Host equals the Origin of a page on a non-default port.
NGINX_TUTORIAL_SITE = """\
server {
    listen @LISTEN@;
    location / {
        proxy_pass http://@UPSTREAM@;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $host;
    }
}
"""

CADDY_SITE = """\
@ADDRESS@ {
	reverse_proxy @UPSTREAM@
}
"""

# The values docs/deploy.md shows in place of the test's ports and files.
DOC_VALUES = {"LISTEN": "80", "UPSTREAM": "127.0.0.1:8090", "ADDRESS": ":80"}
DOC_TLS_VALUES = {"LISTEN": "443", "UPSTREAM": "127.0.0.1:8090",
                  "CERT": "/etc/ssl/robot/robot.crt", "KEY": "/etc/ssl/robot/robot.key"}


def render(template: str, **values: str) -> str:
    """The template with every @NAME@ replaced; a placeholder left over is an error."""
    text = template
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    assert "@" not in text.replace("$", ""), f"unfilled placeholder in:\n{text}"
    return text


def find_nginx() -> str | None:
    # /usr/sbin is not on every user's PATH.
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def find_caddy() -> str | None:
    return shutil.which("caddy")


def _connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ProxyProcess:
    """One proxy subprocess on a free loopback port; `url` is what a browser opens."""

    attempts = 5  # a free port can be taken by someone else before the proxy binds it

    def __init__(self, directory: Path, scheme: str = "http") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scheme = scheme
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.output = self.dir / "output.log"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        raise NotImplementedError

    def _log_text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def start(self, timeout: float = 10.0) -> ProxyProcess:
        for _ in range(self.attempts):
            port = free_port()
            argv, env = self._command(port)
            with open(self.output, "wb") as out:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, env=env)
            self.port = port
            proc = self.proc
            wait_until(lambda p=proc, n=port: p.poll() is not None or _connectable(n),
                       timeout, 0.02, f"{argv[0]} to listen on port {port}")
            if proc.poll() is None:
                return self
            log = self._log_text()
            self.stop()
            if "in use" not in log:  # EADDRINUSE: try another port; anything else is fatal
                raise AssertionError(f"{argv[0]} did not start on port {port}:\n{log}")
        raise AssertionError(f"no free port for {type(self).__name__} after "
                             f"{self.attempts} attempts:\n{self._log_text()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGTERM: nginx's and Caddy's fast shutdown. nginx's graceful SIGQUIT would
        # wait for the dashboard's event stream, which never ends by itself.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Nginx(ProxyProcess):
    """nginx in the foreground with everything it writes under `directory`.

    The site block is put inside a minimal http {} exactly as a distribution's
    sites-enabled file would be; `access.log` records "METHOD URI STATUS" lines.
    """

    def __init__(self, directory: Path, site: str, upstream: str, *, cert: str = "",
                 key: str = "") -> None:
        super().__init__(directory, "https" if cert else "http")
        self.binary = find_nginx() or "nginx"
        self.site, self.upstream, self.cert, self.key = site, upstream, cert, key
        self.access_log = self.dir / "access.log"

    def site_text(self, port: int) -> str:
        values = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAM": self.upstream}
        if self.cert:
            values.update(CERT=self.cert, KEY=self.key)
        return render(self.site, **values)

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        d = self.dir
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / sub).mkdir(exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(f"""\
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    log_format tested '$request_method $request_uri $status';
    access_log {d}/access.log tested;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # Started as root, nginx's workers run as "nobody", who cannot enter pytest's
    # private tmp directories: keep request and response bodies in memory.
    client_body_buffer_size 128k;
    proxy_max_temp_file_size 0;

{self.site_text(port)}}}
""")
        argv = [self.binary, "-p", f"{d}/", "-c", str(conf), "-e", str(d / "error.log"),
                "-g", f"daemon off; pid {d}/nginx.pid; error_log {d}/error.log;"]
        return argv, None

    def _log_text(self) -> str:
        error_log = self.dir / "error.log"
        extra = error_log.read_text(errors="replace") if error_log.exists() else ""
        return super()._log_text() + extra

    def requests_seen(self) -> list[tuple[str, str, int]]:
        """(method, uri, status) of every request nginx has finished."""
        if not self.access_log.exists():
            return []
        seen = []
        for line in self.access_log.read_text().splitlines():
            method, uri, status = line.rsplit(" ", 2)
            seen.append((method, uri, int(status)))
        return seen


class Caddy(ProxyProcess):
    """`caddy run` with a Caddyfile; its home, config and data stay under `directory`."""

    def __init__(self, directory: Path, upstream: str) -> None:
        super().__init__(directory)
        self.binary = find_caddy() or "caddy"
        self.upstream = upstream

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        d = self.dir
        caddyfile = d / "Caddyfile"
        # Global options for the test only: no admin endpoint on the shared port 2019.
        caddyfile.write_text("{\n\tadmin off\n}\n\n" + render(
            CADDY_SITE, ADDRESS=f":{port}", UPSTREAM=self.upstream))
        env = {**os.environ, "HOME": str(d), "XDG_CONFIG_HOME": str(d / "config"),
               "XDG_DATA_HOME": str(d / "data")}
        return [self.binary, "run", "--config", str(caddyfile), "--adapter", "caddyfile"], env


def self_signed_certificate(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 made by the openssl command: (cert path, key path)."""
    cert, key = directory / "robot.crt", directory / "robot.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


# -- the 55 s long-poll through nginx, started before the other tests ----------------------
# The test that reads its answer (tests/test_reverse_proxy.py); tests/conftest.py starts
# the long-poll when the session's collection is done, if that test is among the selected.
LONG_POLL_TEST = ("test_reverse_proxy.py",
                  "test_long_poll_of_60_s_is_answered_inside_nginx_read_timeout")
_LONG_POLL_CLIENT = """\
import json, sys, time
import requests
started = time.monotonic()
r = requests.get(sys.argv[1] + "/queue/status", params={"wait": 60}, timeout=90)
print(json.dumps({"status": r.status_code, "text": r.text,
                  "elapsed": time.monotonic() - started}))
"""


class LongPollThroughNginx:
    """GET /queue/status?wait=60 through nginx with the documented site (NGINX_SITE), to
    a server process with its default clamp (max_wait), from a client process of its
    own: nothing of it runs in the test process, so its wait can pass while other tests
    run. `answer()` waits for the reply."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.server = ServerProcess(str(directory / "tasks.db"), "sim", "--sim-speed", "200")
        self.proxy = Nginx(directory / "nginx", NGINX_SITE, f"127.0.0.1:{self.server.port}")
        self.client: subprocess.Popen[str] | None = None

    def start(self) -> LongPollThroughNginx:
        try:
            self.server.wait_ready()
            self.proxy.start()
            self.client = subprocess.Popen(
                [sys.executable, "-c", _LONG_POLL_CLIENT, self.proxy.url],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except BaseException:
            self.stop()
            raise
        return self

    def answer(self, timeout: float = 100.0) -> tuple[int, str, float]:
        """(status, body, seconds the client waited for it)."""
        assert self.client is not None, "not started"
        out, err = self.client.communicate(timeout=timeout)
        assert self.client.returncode == 0, err
        reply = json.loads(out)
        return reply["status"], reply["text"], reply["elapsed"]

    def stop(self) -> None:
        if self.client is not None and self.client.poll() is None:
            self.client.kill()
            self.client.communicate()
        self.proxy.stop()
        self.server.stop()


_early: LongPollThroughNginx | None = None
_early_dir: str | None = None


def start_early_long_poll(items: list[Any]) -> None:
    """Start the long-poll if its test is selected and nginx is there (a failure here
    leaves the test to start its own, and to report what went wrong)."""
    global _early, _early_dir
    wanted = any(item.name == LONG_POLL_TEST[1] and str(item.path).endswith(LONG_POLL_TEST[0])
                 for item in items)
    if not wanted or find_nginx() is None or _early is not None:
        return
    _early_dir = tempfile.mkdtemp(prefix="early-long-poll-")
    try:
        _early = LongPollThroughNginx(Path(_early_dir)).start()
    except Exception:
        stop_early_long_poll()


def take_early_long_poll() -> LongPollThroughNginx | None:
    """The long-poll started before the tests (then the caller stops it), or None."""
    global _early
    early, _early = _early, None
    return early


def stop_early_long_poll() -> None:
    """At the session's end: whatever of it is still running, and its directory."""
    global _early, _early_dir
    if _early is not None:
        _early.stop()
        _early = None
    if _early_dir is not None:
        shutil.rmtree(_early_dir, ignore_errors=True)
        _early_dir = None
