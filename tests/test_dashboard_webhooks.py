"""The dashboard's Webhooks page and its warning (issue 32, docs/dashboard.md): a failing
subscription shows in Chromium, on the dashboard (the banner) and on the page (its row,
the reason, the last attempt); the row's buttons (Enable/Disable, Test, Deliveries with
Replay, Remove) and the form that adds one (its secret shown once) do what they say.

Real headless Chromium (launched as in tests/test_dashboard.py) against the real server
and simulator, delivering to real receivers on loopback (tests/webhook_receiver.py);
the retry schedule is shortened with the server's setting (--webhook-retry). Every
outcome the page shows is checked on the server over HTTP too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import test_dashboard as base
from tests.conftest import SCAN, Client, add_principal, wait_until
from tests.webhook_receiver import Receiver

browser = base.browser
dashboard = base.dashboard
Dashboard = base.Dashboard
needs_browser = base.needs_browser
expect = base.expect
T = base.T
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/=]{20,}$")


@pytest.fixture
def new_receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(then: int = 200) -> Receiver:
        made.append(Receiver(then=then))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def subscribe(client: Client, url: str, events: list[str], description: str) -> str:
    r = client.post("/webhooks", {"url": url, "events": events, "description": description})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def hooks(client: Client) -> dict[str, dict[str, Any]]:
    r = client.get("/webhooks")
    assert r.status_code == 200, r.text
    return {w["id"]: w for w in r.json()["webhooks"]}


def one_failing_one_healthy(make_server: Callable[..., Any],
                            new_receiver: Callable[..., Receiver]) -> tuple[Any, Client, str, str]:
    """A server with two subscriptions after one completed task: one to a receiver that
    answers 500 (disabled once its one retry failed too), one to a receiver that works."""
    server = make_server(webhook_retry=(0.2,))
    client = Client(server)
    failing, healthy = new_receiver(500), new_receiver(200)
    bad = subscribe(client, failing.url, ["task.completed"], "LIMS")
    good = subscribe(client, healthy.url, ["*"], "chat")
    client.wait_final(client.submit(SCAN))
    wait_until(lambda: hooks(client)[bad]["enabled"] is False
               and (hooks(client)[good]["last"] or {}).get("ok"), message="the 500s disable it")
    listed = hooks(client)
    assert listed[bad]["disabled_reason"] == "retries_exhausted"
    assert listed[bad]["last"]["status_code"] == 500 and listed[good]["last"]["status_code"] == 200
    assert len(failing.received) == 2 and len(healthy.received) == 1
    return server, client, bad, good


def row(page: Any, hook_id: str) -> Any:
    return page.locator(f'#webhooks-rows tr[data-webhook-id="{hook_id}"]')


@needs_browser
def test_a_failing_subscription_is_a_warning_on_the_dashboard_and_a_row_on_the_page(
        make_server: Callable[..., Any], new_receiver: Callable[..., Receiver],
        dashboard: Callable[..., Dashboard]) -> None:
    server, client, bad, good = one_failing_one_healthy(make_server, new_receiver)
    bad_url = hooks(client)[bad]["url"]

    tab = dashboard(server)
    page = tab.open()
    # On the dashboard itself: the banner names the subscription, the header links the page.
    alert = page.locator("#webhook-alert")
    expect(alert).to_be_visible(timeout=T)
    expect(alert).to_contain_text("Webhooks failing")
    expect(alert).to_contain_text(f"1 of 2 subscriptions need attention: {bad_url}.")
    expect(page.locator("#webhooks-link")).to_be_visible()
    expect(page.locator("#dashboard")).to_be_visible()

    alert.locator("a").click()
    expect(page.locator("#webhooks-page")).to_be_visible(timeout=T)
    expect(page.locator("#dashboard")).to_be_hidden()
    failing = row(page, bad)
    expect(failing).to_have_attribute("data-state", "disabled", timeout=T)
    expect(failing.locator(".webhook-state")).to_contain_text("disabled")
    expect(failing.locator(".webhook-state")).to_contain_text("every retry failed")
    expect(failing.locator(".webhook-last")).to_contain_text("HTTP 500")
    expect(failing.locator(".webhook-description")).to_have_text("LIMS")
    expect(failing).to_contain_text("task.completed")
    expect(failing.locator(".webhook-toggle")).to_have_text("Enable")
    healthy = row(page, good)
    expect(healthy).to_have_attribute("data-state", "ok")
    expect(healthy.locator(".webhook-state")).to_have_text("ok")
    expect(healthy.locator(".webhook-last")).to_contain_text("HTTP 200")
    expect(healthy).to_contain_text("all events")
    expect(healthy.locator(".webhook-pending")).to_have_text("0")

    # In Chinese, after a switch without reload.
    page.click('[data-lang="zh"]')
    expect(failing.locator(".webhook-state")).to_contain_text("已停用", timeout=T)
    expect(failing.locator(".webhook-state")).to_contain_text("所有重试都失败了")
    expect(healthy.locator(".webhook-state")).to_have_text("正常")
    expect(alert).to_contain_text("回调发送失败")
    expect(alert).to_contain_text(f"2 个订阅中有 1 个需要处理：{bad_url}。")
    page.click('[data-lang="en"]')

    # Back on the dashboard the banner stays.
    page.click("#webhooks-page .panel-head a")
    expect(page.locator("#dashboard")).to_be_visible(timeout=T)
    expect(page.locator("#webhooks-page")).to_be_hidden()
    expect(alert).to_be_visible()
    assert tab.errors == []


@needs_browser
def test_the_rows_buttons_and_the_form_act_on_the_server(
        make_server: Callable[..., Any], new_receiver: Callable[..., Receiver],
        dashboard: Callable[..., Dashboard]) -> None:
    server, client, bad, good = one_failing_one_healthy(make_server, new_receiver)
    tab = dashboard(server)
    page = tab.open()
    page.click("#webhooks-link")
    expect(page.locator("#webhooks-page")).to_be_visible(timeout=T)

    # Test: a ping, sent at once; the result line says how it went.
    row(page, good).locator(".webhook-test").click()
    result = page.locator("#webhooks-result")
    expect(result).to_contain_text("Test message delivered to", timeout=T)
    expect(result).to_contain_text("HTTP 200")
    row(page, bad).locator(".webhook-test").click()
    expect(result).to_contain_text("failed: HTTP 500", timeout=T)

    # Deliveries, newest first (the ping, then the task's two attempts), and Replay.
    row(page, bad).locator(".webhook-deliveries-btn").click()
    deliveries = page.locator("#deliveries-rows tr[data-delivery-id]")
    expect(deliveries).to_have_count(2, timeout=T)
    task_delivery = deliveries.nth(1)
    expect(task_delivery).to_have_attribute("data-status", "failed")
    expect(task_delivery).to_contain_text("task.completed")
    expect(task_delivery.locator(".delivery-attempts")).to_have_text("2")
    replayed = task_delivery.get_attribute("data-delivery-id")
    task_delivery.locator(".delivery-replay").click()
    expect(result).to_contain_text(f"Delivery {replayed} sent again", timeout=T)
    expect(result).to_contain_text("failed, HTTP 500")
    expect(deliveries).to_have_count(3, timeout=T)
    expect(deliveries.first).to_contain_text(f"replay of {replayed}")
    listed = client.get(f"/webhooks/{bad}/deliveries").json()["deliveries"]
    assert [d["replay_of"] for d in listed] == [int(replayed or 0), None, None]
    assert listed[0]["msg_id"] == listed[2]["msg_id"]  # the same webhook-id as the original

    # Enable: PATCH; the row says it is enabled but still failing, and so does the banner.
    row(page, bad).locator(".webhook-toggle").click()
    expect(row(page, bad)).to_have_attribute("data-state", "failing", timeout=T)
    expect(row(page, bad).locator(".webhook-toggle")).to_have_text("Disable")
    assert hooks(client)[bad]["enabled"] is True
    expect(page.locator("#webhook-alert")).to_be_visible()

    # The next task's delivery fails twice: disabled again, and the page follows
    # (the stream's `webhook` event) without a reload.
    client.wait_final(client.submit(SCAN))
    expect(row(page, bad)).to_have_attribute("data-state", "disabled", timeout=T)
    expect(row(page, bad).locator(".webhook-toggle")).to_have_text("Enable")
    assert hooks(client)[bad]["enabled"] is False

    # Remove (after the confirmation): only the healthy one is left, and no warning.
    page.once("dialog", lambda dialog: dialog.accept())
    row(page, bad).locator(".webhook-remove").click()
    expect(row(page, bad)).to_have_count(0, timeout=T)
    expect(page.locator("#webhook-alert")).to_be_hidden()
    assert list(hooks(client)) == [good]

    # The form: a new subscription, its secret shown once.
    receiver = new_receiver(200)
    page.fill("#webhook-url", receiver.url)
    page.fill("#webhook-description", "notebook")
    page.click("#webhook-add button[type=submit]")
    expect(page.locator("#webhook-secret-value")).to_have_text(SECRET, timeout=T)
    expect(page.locator("#webhook-secret-text")).to_contain_text("it is not shown again")
    added = [w for w in hooks(client).values() if w["url"] == receiver.url]
    assert len(added) == 1 and added[0]["events"] == ["*"]
    assert added[0]["description"] == "notebook"
    expect(row(page, added[0]["id"])).to_have_attribute("data-state", "new", timeout=T)
    page.click("#webhook-secret-hide")
    expect(page.locator("#webhook-secret")).to_be_hidden()
    # Not a single event chosen: said next to the form, nothing sent.
    page.uncheck("#webhook-add [name=all]")
    page.fill("#webhook-url", receiver.url)
    page.click("#webhook-add button[type=submit]")
    expect(page.locator("#webhook-add-error")).to_have_text(
        "Choose at least one event, or all events.", timeout=T)
    assert len(hooks(client)) == 2
    assert tab.errors == []



@needs_browser
def test_a_receiver_that_answers_410_raises_the_warning_live(
        make_server: Callable[..., Any], new_receiver: Callable[..., Receiver],
        dashboard: Callable[..., Dashboard]) -> None:
    server = make_server()
    client = Client(server)
    rx = new_receiver(200)
    hook = subscribe(client, rx.url, ["task.completed"], "LIMS")
    client.wait_final(client.submit(SCAN))
    wait_until(lambda: hooks(client)[hook]["last"], message="the first delivery")

    tab = dashboard(server, locale="zh-CN")
    page = tab.open()
    expect(page.locator("#webhooks-link")).to_be_visible(timeout=T)
    expect(page.locator("#webhook-alert")).to_be_hidden()
    rx.then = 410  # the receiver unsubscribes
    client.wait_final(client.submit(SCAN))
    alert = page.locator("#webhook-alert")
    expect(alert).to_be_visible(timeout=T)
    expect(alert).to_contain_text(f"1 个订阅中有 1 个需要处理：{rx.url}。")
    assert hooks(client)[hook]["disabled_reason"] == "gone"
    alert.locator("a").click()
    expect(row(page, hook).locator(".webhook-state")).to_contain_text("接收方回复 410（已退订）",
                                                                       timeout=T)
    expect(row(page, hook).locator(".webhook-last")).to_contain_text("HTTP 410")
    assert tab.errors == []


@needs_browser
def test_only_who_may_manage_webhooks_sees_the_page_and_the_warning(
        make_server: Callable[..., Any], new_receiver: Callable[..., Receiver],
        dashboard: Callable[..., Dashboard]) -> None:
    admin_token = "admin-token-for-the-webhook-page-tests"
    server = make_server(api_token=admin_token)
    admin = Client(server)
    admin.session.headers["Authorization"] = f"Bearer {admin_token}"
    gone = new_receiver(410)
    hook = subscribe(admin, gone.url, ["task.completed"], "LIMS")
    admin.wait_final(admin.submit(SCAN))
    wait_until(lambda: hooks(admin)[hook]["enabled"] is False, message="410 disables it")
    tokens = {role: add_principal(server.url, name, role, admin_token)
              for name, role in (("olga", "operator"), ("ada", "admin"))}

    for role, allowed in (("operator", False), ("admin", True)):
        tab = dashboard(server)
        tab.page.add_init_script(
            f"localStorage.setItem('robot-task-server.token', {tokens[role]!r})")
        page = tab.open()
        expect(page.locator("#who-name")).to_contain_text(role, timeout=T)
        if allowed:
            expect(page.locator("#webhook-alert")).to_be_visible(timeout=T)
            expect(page.locator("#webhooks-link")).to_be_visible()
        else:
            # Nothing asked that the server would refuse (403), nothing shown.
            page.goto(server.url + "/#webhooks")
            tab.wait_live()
            expect(page.locator("#dashboard")).to_be_visible()
            expect(page.locator("#webhooks-page")).to_be_hidden()
            expect(page.locator("#webhooks-link")).to_be_hidden()
            expect(page.locator("#webhook-alert")).to_be_hidden()
            assert not [r for r in tab.requests if urlsplit(r.url).path.startswith("/webhooks")]
        assert tab.errors == []
