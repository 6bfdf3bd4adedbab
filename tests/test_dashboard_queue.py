"""The dashboard shapes the queue (issue 33, docs/dashboard.md): To the front / Up / Down
and drag-and-drop reorder the Pending list (what the robot then runs is checked on the
wire), the maintenance banner follows drain -> maintenance -> open, a `not_before` shows
with a live count-down (and the form sends one), each waiting task says why it waits in
the page's language, and the history downloads as CSV.

Real headless Chromium (launched as in tests/test_dashboard.py) against the real server
and simulator; every outcome the page shows is checked on the server over HTTP too. The
queue is paused (POST /queue/pause) to keep tasks waiting while they are reordered.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from tests import test_dashboard as base
from tests.conftest import Client, add_principal, wait_until

browser = base.browser
dashboard = base.dashboard
Dashboard = base.Dashboard
needs_browser = base.needs_browser
expect = base.expect
T = base.T

with open(f"{base.STATIC_DIR}/i18n-en.json", encoding="utf-8") as _fh:
    EN = json.load(_fh)
with open(f"{base.STATIC_DIR}/i18n-zh.json", encoding="utf-8") as _fh:
    ZH = json.load(_fh)


def move_to(x: int) -> dict[str, Any]:
    return {"cmd_type": "MOVE_TO", "params": {"x": x, "y": 0, "z": 0}}


def paused_with(client: Client, n: int) -> list[str]:
    """``n`` MOVE_TO tasks (x = 1..n) waiting behind a pause, in submission order."""
    assert client.post("/queue/pause", {"reason": "lunch"}).status_code == 200
    return [client.submit(move_to(x)) for x in range(1, n + 1)]


def pending_order(client: Client) -> list[str]:
    return list(client.status()["pending"])


def shown_order(page: Any) -> list[str]:
    return list(page.locator("#pending li").evaluate_all("els => els.map(e => e.dataset.taskId)"))


def row(tab: Dashboard, task_id: str) -> Any:
    return tab.pending(task_id)


def expect_order(tab: Dashboard, client: Client, ids: list[str]) -> None:
    wait_until(lambda: pending_order(client) == ids, timeout=5, message=f"server order {ids}")
    wait_until(lambda: shown_order(tab.page) == ids, timeout=5, message=f"page order {ids}")


@needs_browser
def test_buttons_reorder_and_the_robot_runs_that_order(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    a, b, c = paused_with(client, 3)
    tab = dashboard(server)
    page = tab.open()
    expect(row(tab, c)).to_be_visible(timeout=T)
    assert shown_order(page) == [a, b, c]
    # The first can go neither up nor to the front, the last not down.
    expect(row(tab, a).locator("button.move-jump")).to_be_disabled()
    expect(row(tab, a).locator("button.move-up")).to_be_disabled()
    expect(row(tab, c).locator("button.move-down")).to_be_disabled()

    row(tab, c).locator("button.move-jump").click()
    expect_order(tab, client, [c, a, b])
    row(tab, a).locator("button.move-down").click()
    expect_order(tab, client, [c, b, a])
    row(tab, a).locator("button.move-up").click()
    expect_order(tab, client, [c, a, b])
    expect(page.locator("#pending li .position")).to_have_text(["#1", "#2", "#3"])

    client.post("/queue/resume")
    for task_id in (a, b, c):
        assert client.wait_final(task_id)["status"] == "completed"
    sent = [cmd["params"]["x"] for cmd in server.simulator.received if cmd.get("cmd") == "MOVE_TO"]
    assert sent == [3, 1, 2]  # c, a, b: the order the page made
    expect(page.locator("#pending-empty")).to_be_visible(timeout=T)
    assert tab.errors == []


@needs_browser
def test_drag_and_drop_takes_the_targets_place(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    a, b, c = paused_with(client, 3)
    tab = dashboard(server)
    tab.open()
    expect(row(tab, c)).to_be_visible(timeout=T)
    expect(row(tab, c)).to_have_attribute("draggable", "true")

    row(tab, c).drag_to(row(tab, a))  # dragged up: before the target
    expect_order(tab, client, [c, a, b])
    row(tab, c).drag_to(row(tab, b))  # dragged down: after the target
    expect_order(tab, client, [a, b, c])
    moves = client.get("/audit", params={"action": "task.move"}).json()["entries"]
    assert [(m["target"], m["before"], m["after"]) for m in reversed(moves)] == \
        [(c, "3", "1"), (c, "1", "3")]

    # A queued sequence is one row: it moves as one block, by the button or dragged.
    r = client.post("/sequences", {"steps": [move_to(10), move_to(11)]})
    assert r.status_code == 202, r.text
    sid = r.json()["sequence_id"]
    group = tab.page.locator(f'#pending li[data-sequence-id="{sid}"]')
    expect(group).to_be_visible(timeout=T)
    s1, s2 = pending_order(client)[3:5]
    group.locator("button.move-jump").click()
    wait_until(lambda: pending_order(client) == [s1, s2, a, b, c], message="the sequence first")
    expect(tab.page.locator("#pending li .position")).to_have_text(["#1", "#3", "#4", "#5"],
                                                                   timeout=T)
    group.drag_to(row(tab, c))  # dragged down onto the last: after it
    wait_until(lambda: pending_order(client) == [a, b, c, s1, s2], message="the sequence last")
    expect(tab.page.locator("#pending li").last).to_have_attribute("data-sequence-id", sid,
                                                                   timeout=T)
    assert tab.errors == []


@needs_browser
def test_a_viewer_sees_the_queue_controls_greyed_with_the_reason(
        make_server: Callable[..., Any], dashboard: Callable[..., Dashboard]) -> None:
    token = "admin-token-for-the-queue-tests"
    server = make_server(api_token=token)
    admin = Client(server)
    admin.session.headers["Authorization"] = f"Bearer {token}"
    a, b = paused_with(admin, 2)
    viewer = add_principal(server.url, "vera", "viewer", token)
    tab = dashboard(server)
    tab.page.add_init_script(f"localStorage.setItem('robot-task-server.token', {viewer!r})")
    page = tab.open()
    why = EN["web.auth.needs_operator"]
    for sel in ("#drain-btn", "#maint-btn"):
        expect(page.locator(sel)).to_be_disabled(timeout=T)
        expect(page.locator(sel)).to_have_attribute("title", why)
    down = row(tab, a).locator("button.move-down")
    expect(down).to_be_disabled(timeout=T)
    expect(down).to_have_attribute("title", why)
    expect(row(tab, b)).to_have_attribute("draggable", "false")
    assert pending_order(admin) == [a, b]


@needs_browser
def test_the_maintenance_banner_follows_drain_maintenance_and_open(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    (waiting,) = paused_with(client, 1)  # something queued: draining stays draining
    tab = dashboard(server)
    page = tab.open()
    banner = page.locator("#maint-banner")
    expect(banner).to_be_hidden()
    expect(page.locator("#open-btn")).to_be_hidden()

    page.click("#drain-btn")
    expect(page.locator("#reason-dialog")).to_be_visible(timeout=T)
    page.fill("#reason-input", "gripper service")
    page.click("#reason-form button[type=submit]")
    expect(banner).to_be_visible(timeout=T)
    expect(page.locator("#maint-label")).to_have_text(EN["web.maint.draining"])
    expect(page.locator("#maint-reason")).to_have_text(
        EN["web.maint.reason"].format(reason="gripper service"))
    expect(page.locator("#maint-since")).to_contain_text(re.compile(r"\d\d:\d\d:\d\d"))
    status = client.status()
    assert status["queue_mode"] == "draining"
    assert status["maintenance"]["reason"] == "gripper service"
    expect(page.locator("#drain-btn")).to_be_hidden()
    assert client.post("/", move_to(9)).status_code == 503  # no new work

    page.click("#maint-btn")
    page.fill("#reason-input", "gripper service")
    page.click("#reason-form button[type=submit]")
    expect(page.locator("#maint-label")).to_have_text(EN["web.maint.maintenance"], timeout=T)
    assert client.status()["queue_mode"] == "maintenance"
    expect(page.locator("#maint-btn")).to_be_hidden()
    # The waiting task says why: maintenance comes before the pause.
    expect(row(tab, waiting).locator(".waiting")).to_have_text(
        EN["web.waiting.maintenance"].format(reason="gripper service"), timeout=T)

    # Another operator's change arrives as a `queue` event: opened elsewhere, gone here.
    assert client.post("/queue/open").status_code == 200
    expect(banner).to_be_hidden(timeout=T)
    expect(page.locator("#drain-btn")).to_be_visible()
    # Maintenance again straight from open, then Open on the banner.
    page.click("#maint-btn")
    page.fill("#reason-input", "calibration")
    page.click("#reason-form button[type=submit]")
    expect(page.locator("#maint-label")).to_have_text(EN["web.maint.maintenance"], timeout=T)
    page.click("#maint-open")
    expect(banner).to_be_hidden(timeout=T)
    assert client.status()["queue_mode"] == "open"
    windows = client.get("/maintenance").json()["windows"]
    assert [w["reason"] for w in windows] == ["calibration", "gripper service"]
    assert all(w["closed_at"] for w in windows)

    # The history as a file, with the page's filter.
    page.select_option("#history-status", "pending")
    with page.expect_download() as download:
        page.click("#history-csv")
    assert re.fullmatch(r"tasks-\d{8}-\d{6}\.csv", download.value.suggested_filename)
    with open(download.value.path(), encoding="utf-8-sig", newline="") as fh:
        text = fh.read()
    assert waiting in text and "\r\n" in text
    assert tab.errors == []


@needs_browser
def test_not_before_shows_a_live_count_down_and_the_form_sends_one(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    later = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 3600))
    task_id = client.submit({**move_to(1), "not_before": later})
    tab = dashboard(server)
    page = tab.open()
    line = row(tab, task_id).locator(".not-before")
    shown = later[11:] if later[:10] == time.strftime("%Y-%m-%d") else later  # as shortTime
    expect(line).to_contain_text(EN["web.pending.not_before"].format(time=shown), timeout=T)
    countdown = line.locator(".countdown")
    expect(countdown).to_have_text(re.compile(r"^starts in (1:00:00|59:[0-5]\d)$"))
    first = countdown.inner_text()
    page.wait_for_function("""([sel, before]) => {
        const el = document.querySelector(sel); return el && el.textContent !== before; }""",
                           arg=[f'#pending li[data-task-id="{task_id}"] .countdown', first],
                           timeout=T)
    # Tasks behind it run first: it keeps its place and waits.
    behind = client.submit({"cmd_type": "PING"})
    assert client.wait_final(behind)["status"] == "completed"
    assert client.task(task_id)["status"] == "pending"

    # The form's optional "not before": sent in the guide's format.
    page.select_option("#cmd-type", "PING")
    page.fill("#not-before", later.replace(" ", "T"))
    with page.expect_request(lambda r: r.method == "POST" and r.url == server.url + "/") as sent:
        page.click("#submit-btn")
    body = json.loads(sent.value.post_data or "{}")
    assert body["not_before"] == later
    expect(page.locator("#submit-result")).to_contain_text("task_", timeout=T)
    new_id = re.search(r"task_\w+", page.locator("#submit-result").inner_text())
    assert new_id and client.task(new_id.group(0))["not_before"] == later
    client.post(f"/task/{task_id}/cancel")
    client.post(f"/task/{new_id.group(0)}/cancel")
    assert tab.errors == []


@needs_browser
def test_why_it_waits_is_said_in_the_pages_language(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    # The server speaks English (its SSE documents too); the page is Chinese.
    first, second = paused_with(client, 2)
    tab = dashboard(server, locale="zh-CN")
    tab.open()
    paused = ZH["web.waiting.paused"].format(reason="lunch")
    expect(row(tab, first).locator(".waiting")).to_have_text(paused, timeout=T)
    expect(row(tab, second).locator(".waiting")).to_have_text(paused)
    # One submitted now arrives by SSE with the server's English message.
    third = client.submit(move_to(3))
    doc = client.task(third)
    assert doc["waiting_for"][0]["message"].startswith("the queue is paused")
    expect(row(tab, third).locator(".waiting")).to_have_text(paused, timeout=T)
    expect(row(tab, third).locator("button.move-jump")).to_have_text(ZH["web.queue.jump"])

    # Resumed with a task running: the next one waits behind it, counted.
    slow = client.submit({"cmd_type": "SCAN_QRCODE",
                          "params": {"rack": "A", "positions": list(range(1, 97))}})
    client.post(f"/task/{first}/cancel")
    client.post(f"/task/{second}/cancel")
    client.post(f"/task/{third}/cancel")
    client.post("/queue/resume")
    wait_until(lambda: client.task(slow)["status"] == "running", message="the scan runs")
    after = client.submit(move_to(4))
    expect(row(tab, after).locator(".waiting")).to_have_text(
        ZH["web.waiting.queue_position"].format(ahead=1), timeout=T)
    client.post(f"/task/{slow}/cancel")
    client.wait_final(after)
    assert tab.errors == []
