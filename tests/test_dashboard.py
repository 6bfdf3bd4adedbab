"""The dashboard, in a real headless Chromium against the real server and simulator.

Browser tests need Playwright's Python package and Debian's chromium at
/usr/bin/chromium (no `playwright install`); without them they are skipped and
only the HTTP-level checks of the static files run.

DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/test_dashboard.py -k screenshot
refreshes the screenshots in the docs (docs/dashboard.png, and docs/dashboard-zh.png in
Chinese). The Chinese page and language switch: tests/test_dashboard_i18n.py.
"""

from __future__ import annotations

import http.client
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.conftest import SCAN, Client

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "server", "static")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
T = 10_000  # ms: generous ceiling for each auto-waiting expectation

if sync_playwright is None:
    BROWSER_MISSING = "the playwright Python package is not installed " \
                      "(pip install -r requirements-dev.txt)"
elif not os.path.exists(CHROMIUM):
    BROWSER_MISSING = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
else:
    BROWSER_MISSING = ""
needs_browser = pytest.mark.skipif(bool(BROWSER_MISSING), reason=BROWSER_MISSING)


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# What the header says once the page is live, per page language.
LIVE_TEXTS = {"en": ("Live", "Robot connected"), "zh": ("实时", "机器人已连接")}


class Dashboard:
    """One browser tab on the dashboard, recording what the console complained about."""

    def __init__(self, page: Page, url: str, lang: str = "en") -> None:
        self.page = page
        self.url = url
        self.lang = lang  # the language the page is expected to show
        self.errors: list[str] = []
        self.requests: list[Any] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("request", lambda request: self.requests.append(request))

    def open(self, *, live: bool = True) -> Page:
        self.page.goto(self.url + "/")
        if live:
            self.wait_live()
        return self.page

    def wait_live(self) -> None:
        live, connected = LIVE_TEXTS[self.lang]
        expect(self.page.locator("#conn")).to_have_text(live, timeout=T)
        expect(self.page.locator("#robot-state")).to_have_text(connected, timeout=T)
        expect(self.page.locator("#cmd-type option")).not_to_have_count(0, timeout=T)

    def pending(self, task_id: str) -> Any:
        return self.page.locator(f'#pending li[data-task-id="{task_id}"]')

    def history_row(self, task_id: str) -> Any:
        return self.page.locator(f'#history tr[data-task-id="{task_id}"]')


@pytest.fixture
def dashboard(browser: Browser) -> Iterator[Callable[..., Dashboard]]:
    contexts = []

    def open_tab(server: Any, width: int = 1280, height: int = 800,
                 locale: str = "en-US") -> Dashboard:
        # The browser's locale is the page's default language (navigator.languages).
        context = browser.new_context(viewport={"width": width, "height": height},
                                      locale=locale)
        contexts.append(context)
        lang = "zh" if locale.lower().startswith("zh") else "en"
        return Dashboard(context.new_page(), server.url, lang)

    yield open_tab
    for context in contexts:
        context.close()


# -- static files over plain HTTP (no browser needed) ------------------------------------
def test_static_files_headers_caching_and_whitelist(server: Any) -> None:
    page = requests.get(server.url + "/", headers=HTML, timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"] == CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "Accept" in page.headers["Vary"]
    # CSP would block these, so the markup must not rely on them.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
    assert not re.search(r"\sstyle\s*=|\son[a-z]+\s*=", page.text)
    assert "http://" not in page.text and "https://" not in page.text  # offline LAN

    etag, modified = page.headers["ETag"], page.headers["Last-Modified"]
    again = requests.get(server.url + "/", headers={**HTML, "If-None-Match": etag}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    assert requests.get(server.url + "/", headers={**HTML, "If-Modified-Since": modified},
                        timeout=10).status_code == 304
    assert requests.get(server.url + "/", headers={**HTML, "If-None-Match": '"other"'},
                        timeout=10).status_code == 200

    # API clients keep the JSON service document (curl sends */*).
    doc = requests.get(server.url + "/", headers={"Accept": "*/*"}, timeout=10)
    assert doc.headers["Content-Type"].startswith("application/json")
    assert doc.json()["service"] == "robot task server"

    types = {"app.js": "text/javascript", "api.js": "text/javascript",
             "i18n.js": "text/javascript", "style.css": "text/css",
             "favicon.svg": "image/svg+xml", "i18n-en.json": "application/json",
             "i18n-zh.json": "application/json"}
    for name, ctype in types.items():
        r = requests.get(f"{server.url}/static/{name}", timeout=10)
        assert r.status_code == 200, name
        assert r.headers["Content-Type"].startswith(ctype), name
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    for bad in ("..%2Fruntime.py", "%2E%2E%2Fstatic_files.py", "nope.js", ".hidden.js",
                "index.html%00.js", "static_files.py", "../routes.py", "..", "."):
        # http.client sends the path as written (requests would normalise the dots).
        conn = http.client.HTTPConnection(*server.address, timeout=10)
        conn.request("GET", f"/static/{bad}")
        status = conn.getresponse().status
        conn.close()
        assert status == 404, (bad, status)


def test_static_files_are_public_when_a_token_is_set(make_server: Callable[..., Any]) -> None:
    server = make_server(api_token="s3cret")
    assert requests.get(server.url + "/static/app.js", timeout=10).status_code == 200
    assert requests.get(server.url + "/", headers=HTML, timeout=10).status_code == 200
    assert requests.get(server.url + "/tasks", timeout=10).status_code == 401


# -- in the browser ------------------------------------------------------------------------
@needs_browser
def test_page_loads_without_console_errors(server: Any, dashboard: Callable[..., Dashboard]
                                           ) -> None:
    tab = dashboard(server)
    page = tab.open()
    expect(page.locator("#robot")).to_contain_text("robot-sim", timeout=T)
    expect(page.locator("#robot")).to_contain_text("queue")
    expect(page.locator("#cmd-type option[value=SCAN_QRCODE]")).to_have_count(1)
    expect(page.locator("#estop-btn")).to_be_visible()
    expect(page.locator("#pending-empty")).to_be_visible()
    assert tab.errors == []  # includes CSP violations, which Chromium logs as errors

    # A tablet in portrait: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 768, "height": 1024})
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    expect(page.locator("#estop-btn")).to_be_in_viewport()


@needs_browser
def test_submit_sample_file_pending_running_completed(
        make_server: Callable[..., Any], dashboard: Callable[..., Dashboard],
        scan_file: str) -> None:
    server = make_server(sim_speed=30)  # ~0.7 s per bottle: progress is observable
    tab = dashboard(server)
    page = tab.open()

    page.click("#pause-btn")  # hold the queue so the task is seen pending first
    expect(page.locator("#banner")).to_be_visible(timeout=T)
    page.set_input_files("#file-input", scan_file)
    expect(page.locator("#raw-json")).to_have_value(re.compile("SCAN_QRCODE"))
    page.click("#submit-btn")
    expect(page.locator("#submit-result")).to_contain_text("Queued task_", timeout=T)
    task_id = re.search(r"task_\w+", page.inner_text("#submit-result")).group(0)
    item = tab.pending(task_id)
    expect(item).to_contain_text("#1", timeout=T)
    expect(item).to_contain_text("Pending")

    page.click("#banner-resume")
    expect(item).to_have_count(0, timeout=T)
    progress = page.locator("#running-progress")
    expect(page.locator("#running .running-head")).to_contain_text(task_id, timeout=T)
    expect(progress).to_have_attribute("max", "3", timeout=T)
    expect(progress).to_have_attribute("value", "1", timeout=T)
    expect(progress).to_have_attribute("value", "2", timeout=T)
    expect(page.locator("#running-items tbody tr")).to_have_count(2)
    expect(page.locator("#running")).to_contain_text("No task running", timeout=T)

    row = tab.history_row(task_id)
    expect(row).to_contain_text("Completed", timeout=T)
    row.locator("button.details").click()
    result = page.locator("#detail-result")
    for position in (1, 2, 3):
        expect(result).to_contain_text(f"A-0{position}-", timeout=T)
    expect(result).to_contain_text('"scanned_count": 3')
    page.click("#detail .transcript-link")
    expect(page.locator("#detail-transcript")).to_contain_text("→ robot", timeout=T)
    assert Client(server).task(task_id)["status"] == "completed"


@needs_browser
def test_running_items_follow_the_deltas_and_fill_a_gap(
        make_server: Callable[..., Any], dashboard: Callable[..., Dashboard]) -> None:
    # 2,000 items a second: ~400 per progress event, over an event's 4 KB, so the events
    # leave them out and the page reads GET /task for them (at most every 2 s).
    server = make_server(sim_speed=0.5, robot_timeout=30.0)  # HOME: 6 s after the burst
    sim = server.simulator
    sim.flood_rate, sim.flood_seconds, sim.flood_items = 2000.0, 1.0, True
    sim.set_fault("flood")
    tab = dashboard(server)
    page = tab.open()
    client = Client(server)
    task_id = client.submit({"cmd_type": "HOME", "params": {}})
    rows = page.locator("#running-items tbody tr")
    expect(rows).to_have_count(2000, timeout=T)
    expect(rows.first).to_have_text("1")
    expect(rows.last).to_have_text("2000")
    expect(page.locator("#running .running-head")).to_contain_text(task_id)  # still running
    reads = [r for r in tab.requests if r.url.endswith(f"/task/{task_id}")]
    assert len(reads) <= 4, [r.url for r in reads]  # ETA lookups and the gap's, not one per event
    client.post(f"/task/{task_id}/cancel")


@needs_browser
def test_validation_error_is_shown_next_to_the_field(
        server: Any, dashboard: Callable[..., Dashboard]) -> None:
    page = dashboard(server).open()
    page.select_option("#cmd-type", "SCAN_QRCODE")
    page.fill("#param-positions", "0, 2")
    page.click("#submit-btn")
    error = page.locator('.field-error[data-error-for="params.positions"]')
    expect(error).to_contain_text("out of range", timeout=T)
    expect(page.locator("#param-positions")).to_have_attribute("aria-invalid", "true")
    expect(page.locator('.field-error[data-error-for="params.rack"]')).to_have_text("")
    assert Client(server).status()["total_tasks"] == 0


@needs_browser
def test_cancel_pending_then_retry_from_the_page(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    client.post("/queue/pause")
    first, second = client.submit(), client.submit()
    tab = dashboard(server)
    page = tab.open()
    expect(tab.pending(second)).to_contain_text("#2", timeout=T)

    tab.pending(second).locator("button.cancel").click()
    expect(tab.pending(second)).to_have_count(0, timeout=T)
    expect(tab.pending(first)).to_contain_text("#1")
    assert client.task(second)["status"] == "cancelled"
    row = tab.history_row(second)
    expect(row).to_contain_text("Cancelled", timeout=T)

    row.locator("button.retry").click()
    expect(page.locator("#pending li")).to_have_count(2, timeout=T)
    expect(page.locator("#notice")).to_contain_text(f"Retrying {second}")
    expect(page.locator("#pending li").nth(1)).to_contain_text("#2")


@needs_browser
def test_emergency_stop_cancels_running_task_and_holds_queue(
        make_server: Callable[..., Any], dashboard: Callable[..., Dashboard]) -> None:
    server = make_server(sim_speed=30)
    client = Client(server)
    long_scan = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "B",
                                                        "positions": list(range(1, 41))}}
    running = client.submit(long_scan)
    waiting = client.submit()
    tab = dashboard(server)
    page = tab.open()
    expect(page.locator("#running-items tbody tr").first).to_be_visible(timeout=T)
    expect(tab.pending(waiting)).to_be_visible()

    page.click("#estop-btn")  # no confirmation dialog may stand in the way
    expect(page.locator("#running")).to_contain_text("No task running", timeout=T)
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#banner")).to_contain_text("emergency stop")
    expect(page.locator("#pause-btn")).to_have_text("Resume queue")
    expect(tab.pending(waiting)).to_contain_text("#1")  # held, not started
    expect(tab.history_row(running)).to_contain_text("Cancelled", timeout=T)
    assert client.task(running)["status"] == "cancelled"
    status = client.status()
    assert status["paused"] is True and status["pause_reason"] == "emergency stop"
    assert client.task(waiting)["status"] == "pending"


@needs_browser
def test_task_submitted_by_api_appears_without_reload(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    tab = dashboard(server)
    page = tab.open()
    page.evaluate("window.__sameDocument = true")

    client.post("/queue/pause", {"reason": "loading rack"})
    expect(page.locator("#banner")).to_contain_text("loading rack", timeout=T)
    task_id = client.submit()
    expect(tab.pending(task_id)).to_contain_text("#1", timeout=T)
    client.post("/queue/resume")
    expect(page.locator("#banner")).to_be_hidden(timeout=T)
    expect(tab.history_row(task_id)).to_contain_text("Completed", timeout=T)
    expect(tab.pending(task_id)).to_have_count(0)
    assert page.evaluate("window.__sameDocument") is True
    # Live means pushed: the task list was fetched only after events, never on a timer.
    assert not any("/queue/status" in r.url for r in tab.requests)


@needs_browser
def test_event_stream_reconnects_with_last_event_id(
        server: Any, dashboard: Callable[..., Dashboard]) -> None:
    tab = dashboard(server)
    seen: list[dict[str, str]] = []

    def events(route: Any) -> None:
        seen.append(route.request.headers)
        if len(seen) == 1:
            # A stream that ends at once, after an event id from long ago: the page
            # must come back quickly (retry: 50) and resume from that id.
            body = ("retry: 50\n\nid: 7\nevent: queue\n"
                    'data: {"paused": true, "pause_reason": "old"}\n\n')
            route.fulfill(status=200, body=body, content_type="text/event-stream")
        else:
            route.continue_()

    tab.page.route("**/events", events)
    tab.open()
    assert len(seen) >= 2
    assert seen[1].get("last-event-id") == "7"
    # The server answered the stale id with a reset: the page reloaded real state.
    expect(tab.page.locator("#banner")).to_be_hidden(timeout=T)


@needs_browser
def test_token_is_asked_once_and_sent_as_header(
        make_server: Callable[..., Any], dashboard: Callable[..., Dashboard]) -> None:
    server = make_server(api_token="s3cret")
    tab = dashboard(server)
    page = tab.open(live=False)
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible(timeout=T)
    page.fill("#token-input", "wrong")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-message")).to_contain_text("rejected", timeout=T)
    page.fill("#token-input", "s3cret")
    page.click("#token-form button[type=submit]")
    expect(dialog).to_be_hidden(timeout=T)
    tab.wait_live()

    page.select_option("#cmd-type", "PING")
    page.click("#submit-btn")
    expect(page.locator("#submit-result")).to_contain_text("Queued", timeout=T)

    page.reload()  # kept in localStorage: not asked again
    tab.wait_live()
    expect(dialog).to_be_hidden()
    assert page.evaluate("Object.values(localStorage)") == ["s3cret"]
    assert page.context.cookies() == []
    assert not any("s3cret" in r.url for r in tab.requests)
    sent = [r.headers.get("authorization") for r in tab.requests if "/events" in r.url]
    assert "Bearer s3cret" in sent


@pytest.mark.skipif(not os.environ.get("DASHBOARD_SCREENSHOT"),
                    reason="set DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the docs")
@needs_browser
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_screenshot_for_the_docs(lang: str, make_server: Callable[..., Any],
                                 dashboard: Callable[..., Dashboard]) -> None:
    # docs/dashboard.png in English, docs/dashboard-zh.png in Chinese (server and page).
    path = os.environ["DASHBOARD_SCREENSHOT"]
    if lang != "en":
        stem, ext = os.path.splitext(path)
        path = f"{stem}-{lang}{ext}"
    server = make_server(sim_speed=20, lang=lang)
    client = Client(server)
    for command in ({"cmd_type": "PING"}, SCAN):  # history, so there are ETAs
        client.wait_final(client.submit(command))
    client.post("/queue/pause")
    cancelled = client.submit({"cmd_type": "HOME"})
    client.post(f"/task/{cancelled}/cancel")
    client.post("/queue/resume")
    client.submit({"cmd_type": "SCAN_QRCODE", "params": {"rack": "A",
                                                          "positions": list(range(1, 13))}})
    client.submit(SCAN)
    client.submit({"cmd_type": "MOVE_TO", "params": {"x": 100, "y": 50, "z": 20}})
    tab = dashboard(server, height=1180, locale="zh-CN" if lang == "zh" else "en-US")
    page = tab.open()
    page.select_option("#cmd-type", "SCAN_QRCODE")
    expect(page.locator("#running-items tbody tr")).to_have_count(4, timeout=T)
    page.locator(f'#history tr[data-task-id="{cancelled}"] button.details').click()
    expect(page.locator("#detail-result")).to_contain_text('"success": false', timeout=T)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=path)
    assert tab.errors == []


@pytest.mark.skipif(not os.environ.get("DASHBOARD_SCREENSHOT"),
                    reason="set DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the docs")
@needs_browser
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_held_queue_screenshot_for_the_docs(lang: str, make_server: Callable[..., Any],
                                            dashboard: Callable[..., Dashboard]) -> None:
    # docs/dashboard-held-en.png and docs/dashboard-held-zh.png: the queue held by the
    # operator with tasks waiting, a scan finished before it, server and page in `lang`.
    stem, ext = os.path.splitext(os.environ["DASHBOARD_SCREENSHOT"])
    path = f"{stem}-held-{lang}{ext}"
    server = make_server(sim_speed=20, lang=lang)
    client = Client(server)
    for command in ({"cmd_type": "PING"}, SCAN):
        client.wait_final(client.submit(command))
    client.post("/queue/pause")
    waiting = [client.submit(SCAN), client.submit({"cmd_type": "PICK", "params": {"position": 5}}),
               client.submit({"cmd_type": "HOME"})]
    tab = dashboard(server, height=900, locale="zh-CN" if lang == "zh" else "en-US")
    page = tab.open()
    expect(page.locator("#banner")).to_be_visible(timeout=T)
    expect(page.locator("#pending li")).to_have_count(len(waiting), timeout=T)
    page.select_option("#cmd-type", "PICK")
    page.screenshot(path=path)
    assert tab.errors == []


@needs_browser
def test_a_robot_still_working_shows_as_settling(
        make_server: Callable[..., Any], dashboard: Callable[..., Dashboard]) -> None:
    """A text robot that sends BUSY with nothing in flight: the header says the link waits
    for it to settle, then "Robot connected" once it is quiet (issue 27)."""
    import threading

    from tests.text_robots import TextRobot

    robot = TextRobot().start()
    done = threading.Event()
    try:
        server = make_server(robot=robot.path, robot_protocol="text", robot_settle=0.5)
        tab = dashboard(server)
        page = tab.open()

        def working() -> None:
            while not done.wait(0.05):
                robot.inject("BUSY")

        thread = threading.Thread(target=working, daemon=True)
        thread.start()
        expect(page.locator("#robot-state")).to_have_text("Waiting for the robot to settle",
                                                          timeout=T)
        done.set()
        thread.join(5)
        expect(page.locator("#robot-state")).to_have_text("Robot connected", timeout=T)
        assert tab.errors == []
    finally:
        done.set()
        robot.stop()


# A lab PC's stable name for a USB serial adapter: the longest port name a header shows.
LONG_PORT = "dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"


@needs_browser
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_header_stays_one_row_at_1280_with_a_long_port_name(
        locale: str, make_server: Callable[..., Any], dashboard: Callable[..., Dashboard],
        tmp_path: Any) -> None:
    from robot.sim.simulator import RobotSimulator

    link = tmp_path / LONG_PORT
    link.parent.mkdir(parents=True)
    sim = RobotSimulator(200.0, link_path=str(link), heartbeat_s=0.05)
    sim.start()
    try:
        server = make_server(robot=sim.path)
        Client(server).post("/queue/pause")  # the pause button's longer label: Resume queue
        tab = dashboard(server, width=1280, height=800, locale=locale)
        page = tab.open()
        port = page.locator("#robot .fact-port")
        expect(port).to_have_attribute("title", str(link), timeout=T)
        expect(page.locator("#banner")).to_be_visible(timeout=T)
        measure = """() => [...document.querySelectorAll(
                '.topbar > *, .controls > button:not([hidden]), #robot > *')]
            .map(e => { const r = e.getBoundingClientRect();
                        return {name: e.id || e.className, top: r.top, bottom: r.bottom,
                                middle: (r.top + r.bottom) / 2, right: r.right}; })"""
        # One row: every item of the header is centred on the emergency stop's line. Polled
        # (the header re-renders on robot events), failing with the last layout seen.
        one_row = f"""() => {{ const boxes = ({measure})();
            const stop = boxes.find(b => b.name === 'estop-btn');
            return boxes.every(b => Math.abs(b.middle - stop.middle) <= 2); }}"""
        try:
            page.wait_for_function(one_row, timeout=T)
        except Exception:  # a TimeoutError: say where each item ended up
            pytest.fail(f"the header is not one row: {page.evaluate(measure)}")
        boxes = page.evaluate(measure)
        buttons = [b for b in boxes if b["name"] in ("pause-btn", "estop-btn")]
        assert len(buttons) == 2
        assert buttons[0]["bottom"] > buttons[1]["top"] and buttons[1]["bottom"] > buttons[0]["top"]
        assert max(b["right"] for b in boxes) <= 1280
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        # The name is cut with an ellipsis (not wrapped); the tooltip has all of it.
        value = port.locator(".fact-value")
        assert value.evaluate("e => e.scrollWidth > e.clientWidth")
        assert value.evaluate("e => getComputedStyle(e).textOverflow") == "ellipsis"
        expect(value).to_have_text(str(link))
        assert tab.errors == []
    finally:
        sim.stop()
