"""`python main.py webhooks add|list|remove|test` (server/webhooks/cli.py), run as real
subprocesses on the database of a real server that runs meanwhile: the server delivers to
a subscription the command line made (its dispatcher re-reads them twice a second), signed
with the secret the command line printed; list never shows a secret; test sends a ping now
and says whether it arrived (exit 0/1); remove removes; the allow-list refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, Client, wait_until
from tests.webhook_receiver import Receiver

CLEAN = ("ROBOT_API_TOKEN", "ROBOT_DB", "ROBOT_SERVER_URL", "ROBOT_LANG", "LANG", "LC_ALL",
         "ROBOT_WEBHOOK_ALLOW", "ROBOT_WEBHOOK_RETRY")
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")  # 32 random bytes, base64
HOOK_ID = re.compile(r"\bwh_[0-9a-f]{16}\b")


def webhooks(*args: str, db: str, lang: str = "en",
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python main.py --db DB webhooks ARGS...` in a clean environment."""
    base = {k: v for k, v in os.environ.items() if k not in CLEAN}
    return subprocess.run([sys.executable, "main.py", "--db", db, "--lang", lang, "webhooks",
                           *args], cwd=ROOT, capture_output=True, text=True, encoding="utf-8",
                          timeout=60, env={**base, **(env or {}), "PYTHONIOENCODING": "utf-8"})


def my_signature(secret: str, msg_id: str, stamp: str, body: bytes) -> str:
    """The Standard Webhooks rule, written here independently of the server's code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_by(got: Any, secret: str) -> bool:
    h = got.headers
    return h["webhook-signature"] == my_signature(secret, h["webhook-id"],
                                                  h["webhook-timestamp"], got.body)


def listed(url: str) -> dict[str, dict]:
    r = requests.get(url + "/webhooks", timeout=10)
    assert r.status_code == 200, r.text
    return {w["id"]: w for w in r.json()["webhooks"]}


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(script: list | None = None, then: int | str = 200) -> Receiver:
        made.append(Receiver(script, then))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def test_add_list_test_remove_beside_a_running_server(make_server, receivers) -> None:
    server = make_server()
    db, url, client = server.settings.db, server.url, Client(server)
    rx, failing = receivers(), receivers(then=500)

    # add: the secret alone on stdout, what it is (and the new id) on stderr.
    added = webhooks("add", rx.url, "--events", "task.completed,task.failed",
                     "--description", "LIMS", db=db)
    assert added.returncode == 0, added
    secret = added.stdout.strip()
    assert SECRET.match(secret) and added.stdout == secret + "\n", added.stdout
    assert "will not be shown again" in added.stderr and secret not in added.stderr
    (hook_id,) = set(HOOK_ID.findall(added.stderr))
    seen = listed(url)[hook_id]  # the running server reads what the command line wrote
    assert (seen["url"], seen["events"], seen["description"], seen["enabled"],
            seen["created_by"]) == (rx.url, ["task.completed", "task.failed"], "LIMS",
                                    True, "console")

    # The server delivers the next task's event, signed with the printed secret.
    task_id = client.submit()
    assert client.wait_final(task_id)["status"] == "completed"
    (got,) = rx.wait_count(1)
    assert got.type == "task.completed" and got.json["data"]["task_id"] == task_id
    assert signed_by(got, secret)
    wait_until(lambda: (listed(url)[hook_id]["last"] or {}).get("ok"), 5, 0.05,
               "the delivery recorded")

    # test: a ping now, signed, recorded; exit 0.
    pinged = webhooks("test", hook_id, db=db)
    assert pinged.returncode == 0, pinged
    assert pinged.stdout.startswith(f"ping delivered to {rx.url}: HTTP 200 in "), pinged.stdout
    ping = rx.wait_count(2)[1]
    assert ping.json["type"] == "ping" and ping.json["data"] == {"webhook_id": hook_id,
                                                                 "message": "ping"}
    assert signed_by(ping, secret) and ping.headers["webhook-id"] != got.headers["webhook-id"]
    r = requests.get(f"{url}/webhooks/{hook_id}/deliveries", timeout=10)
    assert [(d["type"], d["status"]) for d in r.json()["deliveries"]] == [
        ("ping", "delivered"), ("task.completed", "delivered")]

    # A receiver that answers 500: the ping is not delivered, exit 1, the error said.
    other = webhooks("add", failing.url, db=db)  # default: every event
    assert other.returncode == 0, other
    (other_id,) = set(HOOK_ID.findall(other.stderr))
    assert listed(url)[other_id]["events"] == ["*"]
    failed = webhooks("test", other_id, db=db)
    assert failed.returncode == 1, failed
    assert f"ping not delivered to {failing.url}: HTTP 500" in failed.stdout, failed.stdout
    assert failing.wait_count(1)[0].type == "ping"

    # list: both, with their events, state, pending and last result; never a secret.
    shown = webhooks("list", db=db)
    assert shown.returncode == 0 and secret not in shown.stdout + shown.stderr, shown
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["id", "URL", "events", "state", "pending", "last", "result"]
    mine = next(line for line in lines if hook_id in line)
    assert rx.url in mine and "task.completed,task.failed" in mine and "enabled" in mine
    assert re.search(r"\s0\s+200 ok, 20\d\d-", mine), mine
    theirs = next(line for line in lines if other_id in line)
    assert " all " in theirs and "failed: HTTP 500" in theirs, theirs
    zh = webhooks("list", db=db, lang="zh")
    assert zh.returncode == 0 and zh.stdout.split()[:6] == [
        "编号", "地址", "事件", "状态", "待投递", "最近结果"], zh
    assert "已启用" in zh.stdout and "全部" in zh.stdout and "失败：HTTP 500" in zh.stdout

    # remove: gone from the server, its log with it; removing it again: exit 1.
    removed = webhooks("remove", hook_id, db=db)
    assert removed.returncode == 0 and f"Removed webhook {hook_id}" in removed.stdout, removed
    assert set(listed(url)) == {other_id}
    assert requests.get(f"{url}/webhooks/{hook_id}/deliveries", timeout=10).status_code == 404
    again = webhooks("remove", hook_id, db=db)
    assert again.returncode == 1 and again.stderr.strip() == f"no webhook {hook_id}", again
    missing = webhooks("test", hook_id, db=db)
    assert missing.returncode == 1 and missing.stdout == "", missing

    # Each change audited as the console, the subscription its target.
    r = requests.get(url + "/audit", params={"principal": "console"}, timeout=10)
    audited = [(e["action"], e["target"]) for e in reversed(r.json()["entries"])]
    assert audited == [("webhook.add", hook_id), ("webhook.test", hook_id),
                       ("webhook.add", other_id), ("webhook.test", other_id),
                       ("webhook.remove", hook_id)], audited


def test_refused_and_malformed_subscriptions_store_nothing(make_server, receivers) -> None:
    server = make_server()
    db, url = server.settings.db, server.url
    rx = receivers()
    public = webhooks("add", "http://8.8.8.8/hook", db=db)  # outside the default list
    assert public.returncode == 1 and public.stdout == "", public
    assert public.stderr.strip() == ("webhooks may not go to 8.8.8.8 (8.8.8.8): allow it "
                                     "with --webhook-allow (link-local addresses never)")
    # --webhook-allow (or ROBOT_WEBHOOK_ALLOW) narrows the list as the server's flag does.
    narrowed = webhooks("add", rx.url, "--webhook-allow", "10.0.0.0/8", db=db)
    assert narrowed.returncode == 1 and "may not go to 127.0.0.1" in narrowed.stderr, narrowed
    by_env = webhooks("add", rx.url, db=db, env={"ROBOT_WEBHOOK_ALLOW": "192.168.0.0/16"})
    assert by_env.returncode == 1 and "may not go to 127.0.0.1" in by_env.stderr, by_env
    metadata = webhooks("add", "http://169.254.169.254/", "--webhook-allow", "0.0.0.0/0",
                        db=db)  # link-local: never, whatever the list says
    assert metadata.returncode == 1 and "may not go to 169.254.169.254" in metadata.stderr
    # Malformed: usage errors (exit 2), as argparse's own.
    for bad in (["ftp://127.0.0.1/"], [rx.url, "--events", "task.done"],
                [rx.url, "--events", ","], [rx.url, "--description", "x" * 201]):
        refused = webhooks("add", *bad, db=db)
        assert refused.returncode == 2 and "error:" in refused.stderr, (bad, refused)
        assert refused.stdout == ""
    assert listed(url) == {}
    none = webhooks("list", db=db, lang="zh")
    assert none.returncode == 0 and none.stdout.startswith("没有回调"), none
    # A mistyped --db is said, and not created.
    elsewhere = os.path.join(os.path.dirname(db), "typo.db")
    lost = webhooks("list", db=elsewhere)
    assert lost.returncode == 1 and "No task database at" in lost.stderr, lost
    assert not os.path.exists(elsewhere)
