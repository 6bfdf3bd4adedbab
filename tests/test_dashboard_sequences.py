"""Sequences on the dashboard (docs/sequences.md, issue 30), in a real headless Chromium
against the real server and simulator: a held sequence retried, skipped and aborted from
its row, a CONFIRM step confirmed from the page, and a sequence built in the form and
submitted. Every outcome is checked on the server over HTTP, not only on the page.

The browser is launched as in tests/test_dashboard.py (Debian's chromium, Playwright's
Python package); without them these tests are skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests import test_dashboard as base
from tests.conftest import Client, wait_until

browser = base.browser
dashboard = base.dashboard
Dashboard = base.Dashboard
needs_browser = base.needs_browser
expect = base.expect
T = base.T

TOKEN_KEY = "robot-task-server.token"
# PING is not a motion: the simulator's "fail" fault leaves it alone and fails HOME.
HOLDS_AT_2 = {"name": "rack run", "steps": [{"cmd_type": "PING"}, {"cmd_type": "HOME"},
                                            {"cmd_type": "PING"}]}


def submit_sequence(client: Client, body: dict[str, Any]) -> str:
    r = client.post("/sequences", body)
    assert r.status_code == 202, r.text
    return r.json()["sequence_id"]


def sequence(client: Client, seq_id: str) -> dict[str, Any]:
    r = client.get(f"/sequences/{seq_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(client: Client, seq_id: str, *statuses: str) -> dict[str, Any]:
    return wait_until(lambda: (doc := sequence(client, seq_id))["status"] in statuses and doc,
                      timeout=10, interval=0.05, message=f"{seq_id} to be {statuses}")


def row(page: Any, seq_id: str) -> Any:
    return page.locator(f'#sequences li[data-sequence-id="{seq_id}"]')


# What each operator decision leaves behind: the sequence's end, and step 2's status.
RECOVERIES = {"retry": ("completed", "completed"), "skip": ("completed", "skipped"),
              "abort": ("failed", "failed")}


@needs_browser
@pytest.mark.parametrize("action", list(RECOVERIES))
def test_held_sequence_is_recovered_from_its_row(
        action: str, make_server: Callable[..., Any],
        dashboard: Callable[..., Dashboard]) -> None:
    # With a token: the row's buttons must send it as every other call of the page does.
    server = make_server(api_token="s3cret")
    client = Client(server)
    client.session.headers["Authorization"] = "Bearer s3cret"
    tab = dashboard(server)
    tab.page.add_init_script(f"localStorage.setItem('{TOKEN_KEY}', 's3cret')")
    page = tab.open()

    server.simulator.set_fault("fail")
    seq_id = submit_sequence(client, HOLDS_AT_2)
    held = wait_status(client, seq_id, "held")
    assert held["hold_code"] == "step_failed" and held["current_step"] == 2
    item = row(page, seq_id)
    hold = item.locator(".seq-hold")
    expect(hold).to_contain_text("Held at step 2", timeout=T)
    expect(hold).to_contain_text(held["hold_reason"])
    expect(item.locator(".badge").first).to_have_text("Held")
    expect(page.locator("#banner")).to_be_visible(timeout=T)  # the held sequence holds the queue
    # Step 3 waits as one item of its sequence, without a Cancel of its own.
    expect(page.locator(f'#pending li[data-sequence-id="{seq_id}"]')).to_contain_text(
        "rack run", timeout=T)
    server.simulator.set_fault(None)

    item.locator(f".seq-{action}").click()
    end, step2 = RECOVERIES[action]
    doc = wait_status(client, seq_id, end)
    assert [s["status"] for s in doc["steps"]] == ["completed", step2,
                                                   "completed" if end == "completed"
                                                   else "cancelled"]
    if action == "retry":
        assert doc["steps"][1]["attempts"] == 2 and len(doc["steps"][1]["task_ids"]) == 2
    assert client.status()["paused"] is False  # the recover ended the sequence's hold
    expect(item.locator(".badge").first).to_have_text(end.capitalize(), timeout=T)
    expect(hold).to_have_count(0)
    expect(item.locator(".seq-cancel")).to_have_count(0)  # ended: nothing to cancel
    item.locator(".seq-toggle").click()
    steps = item.locator(".seq-steps tbody tr")
    expect(steps).to_have_count(3, timeout=T)
    expect(steps.nth(1)).to_contain_text(step2.capitalize())
    assert tab.errors == []


@needs_browser
def test_confirm_step_is_confirmed_from_the_page(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    tab = dashboard(server)
    page = tab.open()
    seq_id = submit_sequence(client, {"name": "load B", "steps": [
        {"cmd_type": "PING"},
        {"cmd_type": "CONFIRM", "params": {"message": "Load rack B, then confirm",
                                           "timeout_s": 600}},
        {"cmd_type": "HOME"}]})
    waiting = wait_until(lambda: sequence(client, seq_id)["confirm"], timeout=10,
                         interval=0.05, message="the CONFIRM step to wait")
    assert waiting["step"] == 2
    item = row(page, seq_id)
    item.locator(".seq-toggle").click()  # expanded: its steps follow the sequence live
    box = item.locator(".seq-confirm")
    expect(box).to_contain_text("Step 2 waits for your confirmation", timeout=T)
    expect(box.locator(".seq-confirm-message")).to_have_text("Load rack B, then confirm")
    expect(box.locator("time")).to_have_count(1)  # the deadline, from timeout_s
    expect(item.locator('.seq-steps tr[data-step="2"]')).to_contain_text("Running", timeout=T)
    expect(page.locator("#running .seq-tag")).to_contain_text("Step 2 of sequence load B")
    assert sequence(client, seq_id)["status"] == "running"  # still waiting: nothing sent

    box.locator(".seq-confirm-btn").click()
    doc = wait_status(client, seq_id, "completed")
    assert doc["confirm"] is None
    assert [s["status"] for s in doc["steps"]] == ["completed"] * 3
    expect(item.locator(".badge").first).to_have_text("Completed", timeout=T)
    expect(box).to_have_count(0)
    expect(item.locator('.seq-steps tr[data-step="3"]')).to_contain_text("Completed", timeout=T)
    assert tab.errors == []


@needs_browser
def test_form_builds_and_submits_a_two_step_sequence(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    tab = dashboard(server)
    page = tab.open()
    steps = page.locator("#seq-steps li")
    for cmd in ("HOME", "MOVE_TO", "PING"):
        page.select_option("#cmd-type", cmd)
        page.click("#seq-add")
    expect(steps).to_have_count(3)
    steps.nth(1).locator(".seq-remove").click()  # MOVE_TO out
    steps.nth(1).locator(".seq-up").click()  # PING before HOME
    expect(steps.nth(0)).to_contain_text("PING")
    expect(steps.nth(1)).to_contain_text("HOME")
    expect(steps.nth(0).locator(".seq-up")).to_be_disabled()
    expect(steps.nth(1).locator(".seq-down")).to_be_disabled()
    page.fill("#seq-name", "built on the page")
    page.click("#seq-submit")

    result = page.locator("#seq-result")
    expect(result).to_contain_text("Queued sequence seq_", timeout=T)
    seq_id = re.search(r"seq_\w+", result.inner_text()).group(0)
    doc = wait_status(client, seq_id, "completed")
    assert doc["name"] == "built on the page"
    assert [(s["step"], s["cmd_type"], s["status"]) for s in doc["steps"]] == [
        (1, "PING", "completed"), (2, "HOME", "completed")]
    expect(steps).to_have_count(0)  # sent: the builder starts afresh
    expect(row(page, seq_id).locator(".badge").first).to_have_text("Completed", timeout=T)
    assert tab.errors == []


@needs_browser
def test_invalid_sequences_show_each_error_with_its_step(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    tab = dashboard(server)
    page = tab.open()
    # Built: step 2's positions are out of range; the 422 marks that step.
    page.select_option("#cmd-type", "PING")
    page.click("#seq-add")
    page.select_option("#cmd-type", "SCAN_QRCODE")
    page.fill("#param-positions", "0")
    page.click("#seq-add")
    page.click("#seq-submit")
    errors = page.locator("#seq-result .seq-errors li")
    expect(errors).to_have_count(1, timeout=T)
    expect(errors.first).to_contain_text(re.compile(r"^Step 2\b"))
    expect(page.locator("#seq-steps li.invalid")).to_have_count(1)
    expect(page.locator('#seq-steps li[data-index="1"]')).to_have_class(re.compile("invalid"))

    # Pasted as raw JSON: the same answer under the command form's buttons.
    page.check('input[name="input-mode"][value="raw"]')
    page.fill("#raw-json", '{"steps": [{"cmd_type": "PING"}, {"cmd_type": "NOPE"}, '
                           '{"cmd_type": "HOME", "retry": 99}]}')
    page.click("#submit-btn")
    raw_errors = page.locator("#submit-result .seq-errors li")
    expect(raw_errors).to_have_count(2, timeout=T)
    expect(raw_errors.nth(0)).to_contain_text(re.compile(r"^Step 2\b"))
    expect(raw_errors.nth(1)).to_contain_text(re.compile(r"^Step 3\b"))
    assert client.get("/sequences").json()["count"] == 0  # all or nothing: none queued

    pasted = {"name": "pasted", "steps": [{"cmd_type": "PING"}]}
    page.fill("#raw-json", json.dumps(pasted))
    page.click("#validate-btn")  # a dry run: the server's verdict, nothing queued
    dry = client.post("/sequences?dry_run=1", pasted).json()
    expect(page.locator("#submit-result")).to_contain_text(dry["message"], timeout=T)
    assert client.get("/sequences").json()["count"] == 0
    page.click("#submit-btn")
    expect(page.locator("#submit-result")).to_contain_text("Queued sequence seq_", timeout=T)
    seq_id = re.search(r"seq_\w+", page.inner_text("#submit-result")).group(0)
    assert wait_status(client, seq_id, "completed")["name"] == "pasted"
    # The 422s are answers shown on the page; the console may only have logged those.
    assert [e for e in tab.errors if "422" not in e] == []


@needs_browser
def test_cancel_from_the_row_and_from_the_pending_list(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    tab = dashboard(server)
    page = tab.open()
    first = submit_sequence(client, {"name": "gate", "steps": [
        {"cmd_type": "CONFIRM", "params": {"message": "wait here"}}, {"cmd_type": "PING"}]})
    second = submit_sequence(client, {"name": "behind", "steps": [
        {"cmd_type": "PING"}, {"cmd_type": "HOME"}]})
    wait_until(lambda: sequence(client, first)["confirm"], timeout=10, interval=0.05,
               message="the CONFIRM step to wait")
    # The second sequence waits behind the first, as one item of the pending list.
    group = page.locator(f'#pending li[data-sequence-id="{second}"]')
    expect(group).to_contain_text("Sequence behind — steps waiting: 2", timeout=T)
    group.locator("button.cancel").click()
    doc = wait_status(client, second, "cancelled")
    assert [s["status"] for s in doc["steps"]] == ["cancelled", "cancelled"]
    expect(group).to_have_count(0, timeout=T)
    expect(row(page, second).locator(".badge").first).to_have_text("Cancelled", timeout=T)

    expect(page.locator("#running .running-head button")).to_have_text("Cancel sequence")
    row(page, first).locator(".seq-cancel").click()
    doc = wait_status(client, first, "cancelled")
    assert [s["status"] for s in doc["steps"]] == ["cancelled", "cancelled"]
    expect(row(page, first).locator(".badge").first).to_have_text("Cancelled", timeout=T)
    expect(page.locator("#running")).to_contain_text("No task running", timeout=T)
    expect(page.locator("#pending li")).to_have_count(0)
    assert client.status()["active_sequence"] is None
    assert tab.errors == []
