"""Webhooks end to end (docs/webhooks.md): a real server on loopback delivering to a real
receiver (tests/webhook_receiver.py): signatures, retries on the schedule, 410, a hanging
receiver, the allow-list, replay, order, external_id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import sqlite3
import statistics

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from server.webhooks.allow import AllowList
from server.webhooks.deliver import post
from tests.conftest import SCAN, Client, add_principal, wait_until
from tests.sse import SSEReader
from tests.webhook_receiver import Receiver


def receiver(made: list[Receiver], script: list | None = None, then: int | str = 200) -> Receiver:
    made.append(Receiver(script, then))
    return made[-1]


def subscribe(url: str, target: str, events: list[str] | None = None) -> dict:
    r = requests.post(url + "/webhooks", json={"url": target, "events": events or ["*"],
                                               "description": "LIMS"}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def my_signature(secret: str, msg_id: str, stamp: str, body: bytes) -> str:
    """The Standard Webhooks rule, written here independently of the server's code."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def deliveries(url: str, hook_id: str, **params: str) -> list[dict]:
    r = requests.get(f"{url}/webhooks/{hook_id}/deliveries", params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def test_completed_task_is_delivered_signed_with_its_external_id(make_server, receivers):
    server = make_server()
    client = Client(server)
    rx = receiver(receivers)
    made = subscribe(server.url, rx.url, ["task.completed"])
    assert made["secret"].startswith("whsec_") and made["id"].startswith("wh_")
    task_id = client.submit({**SCAN, "external_id": "LIMS-42/7"})
    doc = client.wait_final(task_id)
    assert doc["status"] == "completed" and doc["external_id"] == "LIMS-42/7"
    (got,) = rx.wait_count(1)
    # Signed as the spec says: our own HMAC, and the published verifier library.
    headers = got.headers
    assert headers["webhook-id"].startswith("msg_")
    assert headers["webhook-signature"] == my_signature(
        made["secret"], headers["webhook-id"], headers["webhook-timestamp"], got.body)
    Webhook(made["secret"]).verify(got.body, {k: headers[k] for k in (
        "webhook-id", "webhook-timestamp", "webhook-signature")})
    with pytest.raises(WebhookVerificationError):
        Webhook(made["secret"]).verify(got.body + b" ", headers)
    event = got.json
    assert event["type"] == "task.completed" and len(got.body) < 20_000
    data = event["data"]
    assert data["task_id"] == task_id and data["external_id"] == "LIMS-42/7"
    assert data["cmd_type"] == "SCAN_QRCODE" and data["status"] == "completed"
    assert data["result_summary"]["success"] is True
    assert data["result_summary"]["counts"]["scanned_bottles"] == 3
    assert data["url"] == f"{server.url}/task/{task_id}"
    assert requests.get(data["url"], timeout=10).json()["result"]["success"] is True
    # The LIMS finds its task by its own id.
    found = client.get("/tasks", params={"external_id": "LIMS-42/7"}).json()
    assert [t["task_id"] for t in found["tasks"]] == [task_id] and found["total"] == 1
    # The subscription's overview: its last result, and never the secret.
    listed = client.get("/webhooks").json()["webhooks"]
    assert listed[0]["last"]["ok"] is True and listed[0]["pending"] == 0
    assert made["secret"] not in json.dumps(listed)


def test_external_id_is_checked_and_kept_by_a_retry(make_server):
    server = make_server()
    client = Client(server)
    for bad in ("", " ", "x" * 201, 42, "a\nb"):
        r = client.post("/", {**SCAN, "external_id": bad})
        assert r.status_code == 422 and r.json()["code"] == "external_id_invalid", bad
        assert r.json()["field"] == "external_id"
    assert client.get("/tasks").json()["total"] == 0  # nothing queued
    client.post("/queue/pause")
    task_id = client.submit({**SCAN, "external_id": "S-1"})
    assert client.post(f"/task/{task_id}/cancel").status_code == 200
    retried = client.post(f"/task/{task_id}/retry").json()["task_id"]
    assert client.task(retried)["external_id"] == "S-1"


def test_retries_follow_the_schedule_with_one_webhook_id(make_server, receivers):
    schedule = (0.4, 0.8, 1.2)
    server = make_server(webhook_retry=schedule)
    rx = receiver(receivers, [500, 503, (429, {"Retry-After": "0"})])
    hook = subscribe(server.url, rx.url, ["task.completed"])["id"]
    Client(server).submit()
    got = rx.wait_count(4, timeout=20)
    assert len({g.headers["webhook-id"] for g in got}) == 1
    assert len({g.body for g in got}) == 1  # the same event each time
    gaps = [b.time - a.time for a, b in zip(got, got[1:], strict=False)]
    for gap, wait in zip(gaps, schedule, strict=True):
        assert wait * 0.85 <= gap <= wait * 1.1 + 0.7, (gaps, schedule)
    (delivery,) = wait_until(lambda: [d for d in deliveries(server.url, hook)
                                      if d["status"] == "delivered"])
    codes = [a["status_code"] for a in delivery["attempts"]]
    assert codes == [500, 503, 429, 200]
    assert deliveries(server.url, hook, status="failed") == []


def test_410_disables_the_subscription_and_says_so(make_server, receivers):
    server = make_server(webhook_retry=(0.2,))
    client = Client(server)
    gone = receiver(receivers, [410])
    hook = subscribe(server.url, gone.url)["id"]
    sse = SSEReader(server.url)
    try:
        client.wait_final(client.submit())
        gone.wait_count(1)
        event = sse.next_event()
        while event.get("event") != "webhook":
            event = sse.next_event()
    finally:
        sse.close()
    assert event["data"]["webhook_id"] == hook and event["data"]["disabled_reason"] == "gone"
    (listed,) = client.get("/webhooks").json()["webhooks"]
    assert listed["enabled"] is False and listed["disabled_reason"] == "gone"
    assert listed["last"]["status_code"] == 410 and listed["last"]["ok"] is False
    # Disabled: later events are not sent to it.
    client.wait_final(client.submit())
    assert len(gone.received) == 1
    assert deliveries(server.url, hook, status="failed")[0]["type"] == "task.completed"


def test_retries_exhausted_disable_the_subscription(make_server, receivers):
    server = make_server(webhook_retry=(0.1, 0.1))
    client = Client(server)
    rx = receiver(receivers, then=500)
    hook = subscribe(server.url, rx.url, ["task.completed"])["id"]
    client.wait_final(client.submit())
    wait_until(lambda: not client.get("/webhooks").json()["webhooks"][0]["enabled"])
    (listed,) = client.get("/webhooks").json()["webhooks"]
    assert listed["disabled_reason"] == "retries_exhausted"
    assert len(rx.received) == 3  # the first attempt and the two retries
    # Enabled again by the operator: it hears of what comes next.
    r = requests.patch(f"{server.url}/webhooks/{hook}", json={"enabled": True}, timeout=10)
    assert r.status_code == 200 and r.json()["webhook"]["enabled"] is True
    rx.then = 200
    client.wait_final(client.submit())
    rx.wait_count(4)


def _gaps(server, client: Client, task_ids: list[str]) -> list[float]:
    """Seconds from each task's end to the next one's start, from the database (the
    documents' times are whole seconds, as the guide shows them)."""
    for task_id in task_ids:
        client.wait_final(task_id)
    with sqlite3.connect(server.settings.db) as conn:
        rows = [conn.execute("SELECT started, ended FROM tasks WHERE task_id = ?",
                             (t,)).fetchone() for t in task_ids]
    return [b[0] - a[1] for a, b in zip(rows, rows[1:], strict=False)]


def test_a_hanging_receiver_does_not_slow_the_queue(make_server, receivers):
    server = make_server(webhook_timeout=30.0)
    client = Client(server)
    hanging = receiver(receivers, then="hang")
    before = _gaps(server, client, [client.submit() for _ in range(6)])
    subscribe(server.url, hanging.url, ["task.completed"])
    after = _gaps(server, client, [client.submit() for _ in range(6)])
    assert len(hanging.received) == 1  # the lane is stuck on its first delivery
    median_before, median_after = statistics.median(before), statistics.median(after)
    print(f"gap between tasks: {median_before * 1000:.1f} ms without, "
          f"{median_after * 1000:.1f} ms with a hanging receiver")
    assert median_after <= median_before + 0.05, (before, after)
    hanging.release.set()


def test_the_allow_list_refuses_public_addresses_and_redirects(make_server, receivers):
    server = make_server(webhook_retry=(30.0,))
    client = Client(server)
    for url in ("http://8.8.8.8/hook", "http://169.254.169.254/latest/meta-data",
                "http://[fe80::1]/", "ftp://127.0.0.1/", "http://user:pw@127.0.0.1/",
                "http:///nohost"):
        r = client.post("/webhooks", {"url": url, "events": ["*"]})
        assert r.status_code == 422, (url, r.text)
        assert r.json()["code"] in ("webhook_url_refused", "webhook_url_invalid"), url
    assert client.get("/webhooks").json()["webhooks"] == []
    # Even listed, link-local (the cloud metadata service) is never allowed.
    wide = make_server(webhook_allow=("0.0.0.0/0", "::/0"))
    r = Client(wide).post("/webhooks", {"url": "http://169.254.169.254/", "events": ["*"]})
    assert r.json()["code"] == "webhook_url_refused"
    # A redirect is not followed: the attempt fails, the other host never hears.
    elsewhere = receiver(receivers)
    redirecting = receiver(receivers, then=(307, {"Location": elsewhere.url}))
    hook = subscribe(server.url, redirecting.url, ["task.completed"])["id"]
    client.wait_final(client.submit())
    redirecting.wait_count(1)
    (delivery,) = wait_until(lambda: [d for d in deliveries(server.url, hook)
                                      if d["attempts"]])
    assert delivery["status"] == "pending" and delivery["next_try"] is not None
    assert "redirect not followed" in delivery["attempts"][0]["error"]
    assert delivery["attempts"][0]["status_code"] == 307
    assert elsewhere.received == []


def test_replay_and_ping_resend_with_their_ids(make_server, receivers):
    server = make_server()
    client = Client(server)
    rx = receiver(receivers)
    made = subscribe(server.url, rx.url, ["task.completed"])
    client.wait_final(client.submit())
    (first,) = rx.wait_count(1)
    (delivery,) = wait_until(lambda: [d for d in deliveries(server.url, made["id"])
                                      if d["status"] == "delivered"])
    r = client.post(f"/webhooks/deliveries/{delivery['id']}/replay")
    assert r.status_code == 200, r.text
    replayed = r.json()["delivery"]
    assert replayed["replay_of"] == delivery["id"] and replayed["status"] == "delivered"
    second = rx.received[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body
    r = client.post(f"/webhooks/{made['id']}/test")
    assert r.status_code == 200 and r.json()["delivery"]["status"] == "delivered"
    ping = rx.received[2]
    assert ping.type == "ping" and ping.headers["webhook-id"] != first.headers["webhook-id"]
    assert ping.headers["webhook-signature"] == my_signature(
        made["secret"], ping.headers["webhook-id"], ping.headers["webhook-timestamp"], ping.body)
    assert client.post("/webhooks/deliveries/99999/replay").status_code == 404
    assert client.post("/webhooks/wh_nope/test").json()["code"] == "webhook_not_found"


def test_in_order_per_subscription_and_queue_events(make_server, receivers):
    server = make_server(webhook_retry=(0.3, 0.3))
    client = Client(server)
    rx = receiver(receivers, [500, 500])
    subscribe(server.url, rx.url, ["task.completed", "queue.paused", "queue.resumed"])
    ids = [client.submit() for _ in range(3)]
    for task_id in ids:
        client.wait_final(task_id)
    client.post("/queue/pause")
    client.post("/queue/resume")
    got = rx.wait_count(7)
    # The first delivery failed twice and held the later ones back, in order.
    order = list(dict.fromkeys(g.headers["webhook-id"] for g in got))
    tasks = [g.json["data"]["task_id"] for g in got if g.type == "task.completed"]
    assert list(dict.fromkeys(tasks)) == ids and tasks[:3] == [ids[0]] * 3
    assert [g.type for g in got][-2:] == ["queue.paused", "queue.resumed"]
    assert len(order) == 5
    assert got[-2].json["data"]["paused"] is True and got[-1].json["data"]["paused"] is False


def test_subscriptions_are_checked_and_admin_only(make_server, receivers):
    server = make_server()
    client = Client(server)
    rx = receiver(receivers)
    for body, code in (({"url": rx.url}, "webhook_events_invalid"),
                       ({"url": rx.url, "events": []}, "webhook_events_invalid"),
                       ({"url": rx.url, "events": ["task.exploded"]}, "webhook_events_invalid"),
                       ({"url": rx.url, "events": ["*"], "secret": "x"}, "webhook_field_unknown"),
                       ({"events": ["*"]}, "webhook_url_invalid")):
        r = client.post("/webhooks", body)
        assert r.status_code == 422 and r.json()["code"] == code, (body, r.text)
    hook = subscribe(server.url, rx.url)["id"]
    r = requests.patch(f"{server.url}/webhooks/{hook}", json={"events": ["task.failed"],
                                                               "description": "ELN"}, timeout=10)
    assert r.json()["webhook"]["events"] == ["task.failed"]
    admin = add_principal(server.url, "root", "admin")
    operator = add_principal(server.url, "olga", "operator", admin)
    r = requests.get(server.url + "/webhooks", timeout=10,
                     headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 403
    r = requests.delete(f"{server.url}/webhooks/{hook}", timeout=10,
                        headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200
    audit = requests.get(server.url + "/audit", params={"target": hook}, timeout=10,
                         headers={"Authorization": f"Bearer {admin}"}).json()
    actions = [row["action"] for row in audit["entries"]]
    assert {"webhook.add", "webhook.change", "webhook.remove"} <= set(actions)


def test_delivery_checks_the_address_again_and_logs_no_secret(make_server, receivers, caplog):
    """DNS may change after the subscription: each delivery resolves and checks again, and
    connects to the address it checked."""
    rx = receiver(receivers)
    answers = iter([["127.0.0.1"], ["93.184.216.34"]])
    allow = AllowList(("127.0.0.0/8",), resolve=lambda host, port: next(answers))
    allow.check(rx.url)  # at subscription: loopback
    outcome = post(allow, rx.url, "whsec_" + "A" * 44, "msg_1", "{}", timeout=5)
    assert not outcome.ok and outcome.status_code is None
    assert "93.184.216.34" in (outcome.error or "") and rx.received == []
    # Secrets never reach a log line, whatever happens to the delivery.
    caplog.set_level(logging.DEBUG)
    server = make_server(webhook_retry=(0.1,))
    client = Client(server)
    failing = receiver(receivers, then=500)
    secret = subscribe(server.url, failing.url, ["*"])["secret"]
    client.post("/queue/pause")
    client.post("/queue/resume")
    wait_until(lambda: not client.get("/webhooks").json()["webhooks"][0]["enabled"])
    assert len(failing.received) == 2
    assert secret not in caplog.text and secret.split("_", 1)[1] not in caplog.text
    assert "disabled: retries_exhausted" in caplog.text
