"""The server behind real reverse proxies: Debian's nginx and Caddy, as subprocesses.

Three nginx site blocks (tests/proxy.py): the one docs/deploy.md recommends, the
bare `proxy_pass` (Host is the upstream's address, HTTP/1.0 upstream) and the
common tutorial block ($host: no port). Through each, the dashboard works in a real
Chromium, a page on another origin cannot stop or resume the robot, the event
stream is not buffered; through the documented one a ?wait=60 long-poll is answered
before nginx's 60 s proxy_read_timeout, and TLS termination passes the https scheme.
Caddy with a minimal Caddyfile serves the dashboard and the API too.

Each test is skipped, with the reason, where nginx, caddy, openssl, Playwright or
Chromium is missing (.ci/run installs the Debian packages).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, SCAN, Client, wait_until
from tests.proxy import (
    CADDY_SITE,
    DOC_TLS_VALUES,
    DOC_VALUES,
    NGINX_BARE_SITE,
    NGINX_SITE,
    NGINX_TLS_SITE,
    NGINX_TUTORIAL_SITE,
    Caddy,
    LongPollThroughNginx,
    Nginx,
    ProxyProcess,
    find_caddy,
    find_nginx,
    render,
    self_signed_certificate,
    take_early_long_poll,
)
from tests.test_dashboard import BROWSER_MISSING, CHROMIUM, CHROMIUM_ARGS, HTML, Dashboard, T

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

needs_browser = pytest.mark.skipif(bool(BROWSER_MISSING), reason=BROWSER_MISSING)
needs_nginx = pytest.mark.skipif(find_nginx() is None,
                                 reason="nginx is not installed (apt-get install nginx)")
needs_caddy = pytest.mark.skipif(find_caddy() is None,
                                 reason="caddy is not installed (apt-get install caddy)")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the openssl command is not installed")

NGINX_SITES = {"documented": NGINX_SITE, "bare": NGINX_BARE_SITE,
               "tutorial": NGINX_TUTORIAL_SITE}
# The names the browser uses, both resolved to 127.0.0.1 by Chromium itself. On plain
# HTTP to a name that is not loopback (a lab deployment) Chromium sends no Sec-Fetch-*
# headers, so the dashboard must pass on the preflight rule alone.
LAB_NAME = "robot.lab.example"
FOREIGN_NAME = "elsewhere.example"
RESOLVE = f"--host-resolver-rules=MAP {LAB_NAME} 127.0.0.1, MAP {FOREIGN_NAME} 127.0.0.1"


@dataclass
class Proxied:
    server: Any  # the RobotServer behind the proxy
    proxy: ProxyProcess

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def lab_url(self) -> str:
        """The proxy as a browser on the lab network reaches it: by name."""
        return f"http://{LAB_NAME}:{self.proxy.port}"

    def status(self) -> dict[str, Any]:
        """GET /queue/status through the proxy."""
        r = requests.get(self.url + "/queue/status", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """Start proxies (nginx or Caddy) in front of a server; all stopped at teardown."""
    started: list[ProxyProcess] = []

    def start(kind: str, server: Any, site: str = NGINX_SITE, **kw: str) -> ProxyProcess:
        host, port = server.address
        upstream = f"{host}:{port}"
        directory = tmp_path / f"{kind}-{len(started)}"
        proxy = Nginx(directory, site, upstream, **kw) if kind == "nginx" \
            else Caddy(directory, upstream)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in reversed(started):
        proxy.stop()


@pytest.fixture(params=list(NGINX_SITES))
def through_nginx(request: pytest.FixtureRequest, make_server: Callable[..., Any],
                  start_proxy: Callable[..., ProxyProcess]) -> Proxied:
    """A fresh server (the simulator robot, loopback: a trusted proxy) behind nginx."""
    server = make_server(allowed_hosts=(LAB_NAME,))
    return Proxied(server, start_proxy("nginx", server, NGINX_SITES[request.param]))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, RESOLVE])
        yield chromium
        chromium.close()


class Tab(Dashboard):
    """A dashboard tab that also records every HTTP error response the page got."""

    def __init__(self, page: Page, url: str) -> None:
        super().__init__(page, url)
        self.failed: list[str] = []
        page.on("response", lambda r: self.failed.append(f"{r.status} {r.request.method} "
                                                         f"{r.url}") if r.status >= 400 else None)


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[[str], Tab]]:
    contexts = []

    def open_(url: str) -> Tab:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
        contexts.append(context)
        return Tab(context.new_page(), url)

    yield open_
    for context in contexts:
        context.close()


class ForeignSite:
    """Another origin (a plain http.server on its own port) with a hostile page."""

    # Phase by phase (?do=a,b), what a foreign page can send without a preflight: a
    # body-less fetch (no-cors, or a "simple" CORS request) and form posts, one of
    # them text/plain shaped as JSON (the body is `{"cmd_type": "PING", "pad": "="}`).
    PAGE = """<!doctype html>
<meta charset="utf-8"><title>another site</title>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="queue" method="post" enctype="text/plain" action="@TARGET@/" target="sink1">
<input type="hidden" name='{"cmd_type": "PING", "pad": "' value='"}'></form>
<form id="resume-form" method="post" action="@TARGET@/queue/resume" target="sink2"></form>
<script>
window.done = false;
window.outcomes = [];
async function attempt(label, path, init) {
  try {
    const r = await fetch('@TARGET@' + path, init);
    outcomes.push(label + ': ' + r.type + ' ' + r.status);
  } catch (e) {
    outcomes.push(label + ': ' + e.name);
  }
}
(async () => {
  for (const what of new URLSearchParams(location.search).get('do').split(',')) {
    if (what === 'stop') await attempt('stop', '/robot/stop', {method: 'POST', mode: 'no-cors'});
    if (what === 'resume') await attempt('resume', '/queue/resume', {method: 'POST'});
    if (what === 'queue' || what === 'resume-form') document.getElementById(what).submit();
  }
  window.done = true;
})();
</script>
"""

    def __init__(self, target: str) -> None:
        body = self.PAGE.replace("@TARGET@", target).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep the test output clean

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://{FOREIGN_NAME}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def foreign_site() -> Iterator[Callable[[str], ForeignSite]]:
    sites: list[ForeignSite] = []

    def start(target: str) -> ForeignSite:
        sites.append(ForeignSite(target))
        return sites[-1]

    yield start
    for site in sites:
        site.close()


def _final_through(url: str, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        doc = requests.get(f"{url}/task/{task_id}", params={"wait": 5}, timeout=30).json()
        return doc if doc["status"] in ("completed", "failed", "cancelled") else None
    return wait_until(final, timeout, 0.01, f"task {task_id} to end")


# -- the dashboard, in Chromium ----------------------------------------------------------
@needs_nginx
@needs_browser
def test_dashboard_works_through_nginx(through_nginx: Proxied, open_tab: Callable[[str], Tab],
                                       scan_file: str) -> None:
    tab = open_tab(through_nginx.lab_url)
    page = tab.open()  # and live: the event stream came through
    page.set_input_files("#file-input", scan_file)
    expect(page.locator("#raw-json")).to_have_value(re.compile("SCAN_QRCODE"))
    page.click("#submit-btn")
    expect(page.locator("#submit-result")).to_contain_text("Queued task_", timeout=T)
    task_id = re.search(r"task_\w+", page.inner_text("#submit-result")).group(0)
    expect(tab.history_row(task_id)).to_contain_text("Completed", timeout=T)

    page.click("#estop-btn")  # no confirmation dialog (see test_dashboard)
    expect(page.locator("#banner")).to_contain_text("emergency stop", timeout=T)
    status = through_nginx.status()
    assert status["paused"] is True and status["pause_reason"] == "emergency stop"
    assert Client(through_nginx.server).task(task_id)["status"] == "completed"

    assert tab.failed == [] and tab.errors == []
    stop = next(r for r in tab.requests if r.url.endswith("/robot/stop"))
    assert "sec-fetch-site" not in stop.all_headers()  # the preflight rule let it in
    # The page's requests went through nginx, and none of them was refused there.
    seen = through_nginx.proxy.requests_seen()
    assert ("POST", "/", 202) in seen and ("POST", "/robot/stop", 200) in seen, seen
    assert [s for s in seen if s[2] >= 400] == []


@needs_nginx
@needs_browser
def test_page_on_another_origin_cannot_stop_or_resume(
        through_nginx: Proxied, open_tab: Callable[[str], Tab],
        foreign_site: Callable[[str], ForeignSite]) -> None:
    proxy = through_nginx.proxy
    site = foreign_site(through_nginx.lab_url)
    page = open_tab(site.url).page
    client = Client(through_nginx.server)  # straight to the server: the test's own view

    def attack(actions: str, posts: int) -> list[tuple[str, str, int]]:
        before = len(proxy.requests_seen())
        page.goto(f"{site.url}/?do={actions}")
        page.wait_for_function("window.done === true", timeout=T)

        def answered() -> list[tuple[str, str, int]]:
            new = proxy.requests_seen()[before:]
            return new if len([s for s in new if s[0] == "POST"]) >= posts else []

        # Form posts go on after the script is done: wait until nginx has answered all.
        return wait_until(answered, 10, 0.02, f"{posts} POSTs answered by nginx")

    # A running queue: a stop or a queued task would show.
    seen = attack("stop,queue", 2)
    assert sorted(seen) == [("POST", "/", 403), ("POST", "/robot/stop", 403)], seen
    status = client.status()
    assert status["paused"] is False and status["total_tasks"] == 0

    # A held queue: a resume would release it, a stop would change the reason.
    client.post("/queue/pause", {"reason": "loading rack"})
    seen = attack("resume,resume-form,stop", 3)
    assert sorted(seen) == [("POST", "/queue/resume", 403), ("POST", "/queue/resume", 403),
                            ("POST", "/robot/stop", 403)], seen
    status = client.status()
    assert status["paused"] is True and status["pause_reason"] == "loading rack"
    assert status["total_tasks"] == 0


# -- HTTP-level, through nginx --------------------------------------------------------------
@needs_nginx
def test_event_stream_first_event_is_not_buffered(through_nginx: Proxied) -> None:
    started = time.monotonic()
    # Nothing happens on this server: a buffering proxy would sit on the snapshot.
    with requests.get(through_nginx.url + "/events", stream=True, timeout=(5, 5),
                      headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        received = b""
        for byte in r.iter_content(chunk_size=1):
            received += byte
            blocks = received.replace(b"\r\n", b"\n").split(b"\n\n")[:-1]
            events = [b for b in blocks if b"\ndata:" in b"\n" + b]
            if events:
                break
            assert time.monotonic() - started < 5, received
    assert b"event: snapshot" in events[0], received
    assert time.monotonic() - started < 5


# Only with X-Forwarded-Host (or Host) carrying the port does a same-origin request
# look same-origin by its headers alone: the reason the docs use $http_host.
SAME_ORIGIN_BY_HEADERS = {"documented": True, "bare": False, "tutorial": False}


@needs_nginx
def test_same_origin_form_post_needs_the_port_in_forwarded_host(
        through_nginx: Proxied, request: pytest.FixtureRequest) -> None:
    config = request.node.callspec.params["through_nginx"]
    # What a form on the proxied page itself would send: no preflight, no Sec-Fetch-Site
    # (an old browser), so only the Origin-equals-host comparison can let it in.
    r = requests.post(through_nginx.url + "/queue/pause", timeout=10,
                      headers={"Origin": through_nginx.url,
                               "Content-Type": "application/x-www-form-urlencoded"})
    if SAME_ORIGIN_BY_HEADERS[config]:
        assert r.status_code == 200, r.text
        assert through_nginx.status()["paused"] is True
    else:
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "cross_origin"
        assert through_nginx.status()["paused"] is False


@needs_nginx
@pytest.mark.timeout(120)
def test_long_poll_of_60_s_is_answered_inside_nginx_read_timeout(tmp_path: Path) -> None:
    # nginx's default proxy_read_timeout is 60 s, and a client asking for 60 s must get
    # the server's clamped answer (55 s), not nginx's 504. The wait is real: started
    # when the session's tests were collected (tests/conftest.py), it has mostly passed
    # by now; run alone, this test starts it itself and takes ~55 s.
    poll = take_early_long_poll() or LongPollThroughNginx(tmp_path / "long-poll").start()
    try:
        status, text, elapsed = poll.answer()
    finally:
        poll.stop()
    assert status == 200, text
    assert json.loads(text)["timed_out"] is True
    assert 50 < elapsed < 60, elapsed


@needs_nginx
@needs_openssl
def test_tls_termination_passes_the_https_scheme(
        make_server: Callable[..., Any], start_proxy: Callable[..., ProxyProcess],
        tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    proxy = start_proxy("nginx", make_server(), NGINX_TLS_SITE, cert=cert, key=key)
    assert proxy.url.startswith("https://")
    # verify= per request: a Session's verify loses to REQUESTS_CA_BUNDLE from the env.
    page = requests.get(proxy.url + "/", headers=HTML, timeout=10, verify=cert)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")

    # Same origin only with the scheme nginx reports: https, not http.
    plain_origin = proxy.url.replace("https://", "http://")
    r = requests.post(proxy.url + "/queue/pause", headers={"Origin": plain_origin},
                      timeout=10, verify=cert)
    assert r.status_code == 403 and r.json()["code"] == "cross_origin", r.text
    r = requests.post(proxy.url + "/queue/pause", headers={"Origin": proxy.url},
                      timeout=10, verify=cert)
    assert r.status_code == 200, r.text
    status = requests.get(proxy.url + "/queue/status", timeout=10, verify=cert).json()
    assert status["paused"] is True


# -- Caddy -----------------------------------------------------------------------------------
@needs_caddy
@needs_browser
def test_dashboard_and_api_through_caddy(make_server: Callable[..., Any],
                                         start_proxy: Callable[..., ProxyProcess],
                                         open_tab: Callable[[str], Tab]) -> None:
    server = make_server(allowed_hosts=(LAB_NAME,))
    caddy = start_proxy("caddy", server)
    tab = open_tab(f"http://{LAB_NAME}:{caddy.port}")
    tab.open()
    assert tab.failed == [] and tab.errors == []

    r = requests.post(caddy.url + "/", json=SCAN, timeout=10)
    assert r.status_code == 202, r.text
    assert _final_through(caddy.url, r.json()["task_id"])["status"] == "completed"
    r = requests.post(caddy.url + "/robot/stop", timeout=10)
    assert r.status_code == 200, r.text
    status = requests.get(caddy.url + "/queue/status", timeout=10).json()
    assert status["paused"] is True and status["pause_reason"] == "emergency stop"
    expect(tab.page.locator("#banner")).to_contain_text("emergency stop", timeout=T)
    # Caddy's own X-Forwarded-Host keeps the port: a same-origin form post passes.
    r = requests.post(caddy.url + "/queue/resume", headers={"Origin": caddy.url}, timeout=10)
    assert r.status_code == 200, r.text
    assert Client(server).status()["paused"] is False


@needs_nginx
@needs_browser
def test_a_refused_page_says_what_to_configure(make_server: Callable[..., Any],
                                               start_proxy: Callable[..., ProxyProcess],
                                               open_tab: Callable[[str], Tab]) -> None:
    # The tutorial block passes the browser's name on; without --allowed-host the server
    # refuses it, and the person at the browser reads why and which flag fixes it.
    server = make_server()
    proxy = start_proxy("nginx", server, NGINX_TUTORIAL_SITE)
    page = open_tab(f"http://{LAB_NAME}:{proxy.port}").page
    reply = page.goto(f"http://{LAB_NAME}:{proxy.port}/")
    assert reply is not None and reply.status == 421
    assert reply.headers["content-type"].startswith("text/html")
    text = page.locator("body").inner_text()
    assert "host_not_allowed" in text and "--allowed-host" in text and LAB_NAME in text
    # A script asking the same gets the JSON error, as always.
    r = requests.get(proxy.url + "/queue/status", headers={"Host": LAB_NAME}, timeout=10)
    assert r.status_code == 421 and r.json()["code"] == "host_not_allowed"


# -- the docs quote what runs here -------------------------------------------------------------
def test_deploy_docs_quote_the_tested_configurations() -> None:
    docs = (Path(ROOT) / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert render(NGINX_SITE, **DOC_VALUES) in docs
    assert render(NGINX_TLS_SITE, **DOC_TLS_VALUES) in docs
    assert render(CADDY_SITE, **DOC_VALUES) in docs
