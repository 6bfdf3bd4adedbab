"""Who is signed in, on the dashboard (issue 31, docs/security.md): the sign-in box, the
name and role in the header, controls the role may not use greyed out with the reason
said, the reason prompt where the server requires one, attribution, and the Audit page
(admin only) with its chain check and CSV export.

Real headless Chromium (launched as in tests/test_dashboard.py) against the real server
and simulator; principals are made through POST /admin/users with the server's
--api-token (conftest's add_principal), as an administrator would. Every outcome the
page shows is checked on the server over HTTP too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from tests import test_dashboard as base
from tests.conftest import SCAN, Client, add_principal, wait_until

browser = base.browser
dashboard = base.dashboard
Dashboard = base.Dashboard
needs_browser = base.needs_browser
expect = base.expect
T = base.T

ADMIN_TOKEN = "admin-token-for-the-dashboard-tests"
TOKEN_KEY = "robot-task-server.token"


def admin_client(server: Any) -> Client:
    client = Client(server)
    client.session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    return client


def add_user(admin: Client, name: str, role: str) -> str:
    return add_principal(admin.url, name, role, ADMIN_TOKEN)


def signed_in(tab: Dashboard, token: str) -> Any:
    """The page opened with `token` already kept in this browser (as after a sign-in)."""
    tab.page.add_init_script(f"localStorage.setItem({TOKEN_KEY!r}, {token!r})")
    return tab.open()


@needs_browser
def test_a_viewer_signs_in_sees_why_it_cannot_submit_and_can_stop(
        make_server: Callable[..., Any], dashboard: Callable[..., Dashboard]) -> None:
    server = make_server(api_token=ADMIN_TOKEN)
    admin = admin_client(server)
    token = add_user(admin, "vera", "viewer")
    admin.post("/queue/pause")
    theirs = admin.submit(SCAN)  # pending, the administrator's

    tab = dashboard(server)
    page = tab.open(live=False)
    expect(page.locator("#token-dialog")).to_be_visible(timeout=T)
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")
    tab.wait_live()
    expect(page.locator("#who-name")).to_have_text("vera (viewer)", timeout=T)
    expect(page.locator("#sign-out")).to_be_visible()
    expect(page.locator("#audit-link")).to_be_hidden()

    # Greyed out with the reason, in the tooltip and (the form) in words.
    for control in ("#submit-btn", "#seq-submit", "#pause-btn", "#banner-resume"):
        expect(page.locator(control)).to_be_disabled(timeout=T)
        expect(page.locator(control)).to_have_attribute("title", "Needs the operator role")
    expect(page.locator("#submit-denied")).to_have_text(
        "You are signed in as viewer: submitting commands and sequences needs the operator role.")
    expect(tab.pending(theirs).locator("button.cancel")).to_be_disabled(timeout=T)
    expect(page.locator("#validate-btn")).to_be_enabled()  # POST /validate only reads

    # The emergency stop is every role's: it works for a viewer.
    expect(page.locator("#estop-btn")).to_be_enabled()
    admin.post("/queue/resume")
    expect(page.locator("#banner")).to_be_hidden(timeout=T)
    r = admin.post("/sequences", {"name": "load B", "steps": [
        {"cmd_type": "CONFIRM", "params": {"message": "Load rack B", "timeout_s": 600}}]})
    item = page.locator(f'#sequences li[data-sequence-id="{r.json()["sequence_id"]}"]')
    expect(item.locator(".seq-confirm-btn")).to_be_disabled(timeout=T)
    expect(item.locator(".seq-confirm-btn")).to_have_attribute("title", "Needs the operator role")
    expect(item.locator(".seq-cancel")).to_be_disabled()
    expect(item.locator(".seq-by")).to_have_text("submitted by admin")
    page.click("#estop-btn")
    expect(page.locator("#notice")).to_be_visible(timeout=T)
    expect(page.locator("#banner")).to_be_visible(timeout=T)
    expect(page.locator("#banner")).to_contain_text("emergency stop")
    expect(page.locator("#banner")).to_contain_text("Paused by vera.")
    status = admin.status()
    assert status["paused"] is True and status["paused_by"] == "vera"
    stops = admin.get("/audit", params={"action": "robot.stop"}).json()["entries"]
    assert [(e["principal"], e["role"]) for e in stops] == [("vera", "viewer")]

    # In Chinese too, after a switch without reload.
    page.click('[data-lang="zh"]')
    expect(page.locator("#submit-btn")).to_have_attribute("title", "需要操作员角色", timeout=T)
    expect(page.locator("#who-name")).to_have_text("vera（查看者）")
    expect(page.locator("#banner")).to_contain_text("由 vera 暂停。")

    # Signing out forgets the token and brings the sign-in box back.
    page.click("#sign-out")
    expect(page.locator("#token-dialog")).to_be_visible(timeout=T)
    assert page.evaluate("Object.keys(localStorage)").count(TOKEN_KEY) == 0
    # The browser logs each 401 before the sign-in; nothing else went wrong (no 403).
    assert [e for e in tab.errors if "status of 401" not in e] == []


@needs_browser
def test_an_operator_submits_but_sees_no_audit_and_cannot_cancel_anothers_task(
        make_server: Callable[..., Any], dashboard: Callable[..., Dashboard]) -> None:
    server = make_server(api_token=ADMIN_TOKEN)
    admin = admin_client(server)
    token = add_user(admin, "olga", "operator")
    admin.post("/queue/pause")
    theirs = admin.submit(SCAN)

    tab = dashboard(server)
    page = signed_in(tab, token)
    expect(page.locator("#who-name")).to_have_text("olga (operator)", timeout=T)
    expect(page.locator("#submit-denied")).to_be_hidden()
    expect(page.locator("#pause-btn")).to_be_enabled()
    cancel = tab.pending(theirs).locator("button.cancel")
    expect(cancel).to_be_disabled(timeout=T)
    expect(cancel).to_have_attribute("title",
                                     "Acting on a task or sequence of admin needs the admin role")

    page.select_option("#cmd-type", "PING")
    page.click("#submit-btn")
    expect(page.locator("#submit-result")).to_contain_text("Queued", timeout=T)
    mine = page.locator("#submit-result").inner_text().split()[1]
    assert admin.task(mine)["submitted_by"] == "olga"
    expect(tab.pending(mine).locator("button.cancel")).to_be_enabled(timeout=T)

    page.evaluate("location.hash = '#audit'")  # not for an operator: the dashboard stays
    expect(page.locator("#audit-link")).to_be_hidden()
    expect(page.locator("#audit-page")).to_be_hidden()
    expect(page.locator("#dashboard")).to_be_visible()
    # Cancelling may say why (optional); the task's details say who did what.
    tab.pending(mine).locator("button.cancel").click()
    expect(page.locator("#reason-message")).to_have_text("Cancelling: you may say why.",
                                                         timeout=T)
    page.fill("#reason-input", "wrong rack")
    page.click("#reason-form button[type=submit]")
    expect(tab.history_row(mine)).to_contain_text("Cancelled", timeout=T)
    assert admin.task(mine)["cancelled_by"] == "olga"
    cancels = admin.get("/audit", params={"action": "task.cancel"}).json()["entries"]
    assert [(e["principal"], e["target"], e["reason"]) for e in cancels] == \
        [("olga", mine, "wrong rack")]
    tab.history_row(mine).locator("button.details").click()
    expect(page.locator("#detail dd.by")).to_have_text(["olga", "olga"], timeout=T)
    expect(page.locator("#detail dl.facts")).to_contain_text("Cancelled by")
    assert admin.get("/audit", params={"principal": "olga"}).status_code == 200
    assert Client(server).get("/audit", headers={"Authorization": f"Bearer {token}"}
                              ).status_code == 403
    assert tab.errors == []


@needs_browser
def test_an_admin_gives_a_required_reason_and_reads_the_audit_page(
        make_server: Callable[..., Any], dashboard: Callable[..., Dashboard]) -> None:
    server = make_server(api_token=ADMIN_TOKEN, require_reason=True)
    admin = admin_client(server)
    add_user(admin, "olga", "operator")
    admin.post("/queue/pause", {"reason": "loading rack"})

    tab = dashboard(server)
    page = signed_in(tab, ADMIN_TOKEN)
    expect(page.locator("#who-name")).to_have_text("admin (admin)", timeout=T)
    expect(page.locator("#banner")).to_contain_text("Paused by admin.", timeout=T)

    # Resuming needs a reason here: asked for, sent as X-Reason, kept in the audit trail.
    page.click("#banner-resume")
    dialog = page.locator("#reason-dialog")
    expect(dialog).to_be_visible(timeout=T)
    expect(page.locator("#reason-message")).to_have_text("Resuming the queue needs a reason.")
    page.click("#reason-form button[type=submit]")  # empty: not sent
    expect(page.locator("#reason-error")).to_have_text("Enter a reason first.")
    assert admin.status()["paused"] is True
    page.fill("#reason-input", "rack B loaded, 装好了")
    page.click("#reason-form button[type=submit]")
    expect(dialog).to_be_hidden(timeout=T)
    expect(page.locator("#banner")).to_be_hidden(timeout=T)
    wait_until(lambda: not admin.status()["paused"], message="the queue to resume")
    resumed = admin.get("/audit", params={"action": "queue.resume"}).json()["entries"]
    assert [(e["principal"], e["reason"]) for e in resumed] == [("admin", "rack B loaded, 装好了")]

    # The Audit page: newest first, the chain checked, filters, CSV with the same filters.
    page.click("#audit-link")
    expect(page.locator("#audit-page")).to_be_visible(timeout=T)
    expect(page.locator("#dashboard")).to_be_hidden()
    rows = page.locator("#audit-rows tr")
    expect(rows.first).to_contain_text("queue.resume", timeout=T)
    expect(rows.first).to_contain_text("rack B loaded, 装好了")
    expect(page.locator("#audit-rows")).to_contain_text("user.add")
    total = len(admin.get("/audit").json()["entries"])
    expect(page.locator("#audit-verify")).to_have_text(f"Chain verified: {total} rows", timeout=T)
    page.select_option("#audit-action", "user.add")
    page.click("#audit-filters button[type=submit]")
    expect(rows).to_have_count(1, timeout=T)
    expect(rows.first).to_contain_text("olga")
    with page.expect_download(timeout=T) as info:
        page.click("#audit-csv")
    with open(info.value.path(), encoding="utf-8-sig", newline="") as fh:
        table = list(csv.DictReader(io.StringIO(fh.read())))
    assert [(r["action"], r["target"]) for r in table] == [("user.add", "olga")]

    page.click("#audit-back")
    expect(page.locator("#dashboard")).to_be_visible(timeout=T)
    expect(page.locator("#audit-page")).to_be_hidden()
    assert tab.errors == []


@needs_browser
def test_an_open_server_says_so_and_offers_no_sign_out(
        server: Any, dashboard: Callable[..., Dashboard]) -> None:
    tab = dashboard(server)
    page = tab.open()
    expect(page.locator("#who-name")).to_have_text("Not signed in: open server", timeout=T)
    expect(page.locator("#sign-out")).to_be_hidden()
    expect(page.locator("#submit-btn")).to_be_enabled()
    expect(page.locator("#pause-btn")).to_be_enabled()
    expect(page.locator("#submit-denied")).to_be_hidden()
    assert tab.errors == []
