"""Roles and permissions (issue 31, docs/security.md), on a real server over loopback:
every route of the router against every role and no token, with the table of what each
route needs written out here by hand (not read from the code); own versus others' work;
--require-reason; nothing set up; the lock-out of an address that keeps sending bad
tokens (its expiry on `Identity` with a fake clock).

The guide's curl/jq loop and requests client with no principals at all run unchanged in
tests/test_guide_clients.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import requests

from server.api.routes import build_router
from server.api.routing import Router
from server.guard.identity import LOCK_S, WINDOW_S, Identity, Refused
from server.guard.permissions import PERMISSIONS, PUBLIC
from server.runtime import STATIC_DIR, RobotServer
from settings import Settings
from tasks.store import TaskStore
from tasks.store.audit import AuditEntry
from tasks.store.principals import PrincipalStore
from tests.conftest import SCAN, add_principal, suite_settings, wait_until

ADMIN_TOKEN = "admin-token-for-the-role-tests"
HOME = {"cmd_type": "HOME"}
SEQ = {"name": "roles", "steps": [HOME, {"cmd_type": "PICK", "params": {"position": 3}}]}

# What each route needs, by hand: (method, pattern) -> (permission, the least role).
EXPECTED: dict[tuple[str, str], tuple[str, str | None]] = {
    ("GET", "/"): ("public", None),
    ("POST", "/"): ("submit", "operator"),
    ("POST", "/validate"): ("read", "viewer"),
    ("GET", "/tasks"): ("read", "viewer"),
    ("GET", "/tasks.csv"): ("read", "viewer"),
    ("GET", "/task/<task_id>"): ("read", "viewer"),
    ("DELETE", "/task/<task_id>"): ("cancel", "operator"),
    ("POST", "/task/<task_id>/cancel"): ("cancel", "operator"),
    ("POST", "/task/<task_id>/retry"): ("submit", "operator"),
    ("GET", "/task/<task_id>/transcript"): ("read", "viewer"),
    ("GET", "/queue/status"): ("read", "viewer"),
    ("POST", "/queue/pause"): ("queue", "operator"),
    ("POST", "/queue/resume"): ("queue", "operator"),
    ("POST", "/robot/stop"): ("stop", "viewer"),
    ("GET", "/robot"): ("read", "viewer"),
    ("GET", "/health"): ("public", None),
    ("GET", "/commands"): ("read", "viewer"),
    ("GET", "/metrics"): ("read", "viewer"),
    ("GET", "/events"): ("read", "viewer"),
    ("GET", "/openapi.json"): ("read", "viewer"),
    ("GET", "/static/<name>"): ("public", None),
    ("POST", "/sequences"): ("submit", "operator"),
    ("GET", "/sequences"): ("read", "viewer"),
    ("GET", "/sequences/<sequence_id>"): ("read", "viewer"),
    ("POST", "/sequences/<sequence_id>/recover"): ("sequence", "operator"),
    ("POST", "/sequences/<sequence_id>/confirm"): ("sequence", "operator"),
    ("POST", "/sequences/<sequence_id>/cancel"): ("cancel", "operator"),
    ("POST", "/sequences/<sequence_id>/fixit"): ("sequence", "operator"),
    ("GET", "/me"): ("read", "viewer"),
    ("GET", "/admin/users"): ("users", "admin"),
    ("POST", "/admin/users"): ("users", "admin"),
    ("POST", "/admin/users/<name>/token"): ("users", "admin"),
    ("DELETE", "/admin/users/<name>"): ("users", "admin"),
    ("GET", "/audit"): ("audit", "admin"),
    ("GET", "/audit.csv"): ("audit", "admin"),
    ("GET", "/audit/verify"): ("audit", "admin"),
    ("GET", "/webhooks"): ("webhooks", "admin"),
    ("POST", "/webhooks"): ("webhooks", "admin"),
    ("PATCH", "/webhooks/<webhook_id>"): ("webhooks", "admin"),
    ("DELETE", "/webhooks/<webhook_id>"): ("webhooks", "admin"),
    ("GET", "/webhooks/<webhook_id>/deliveries"): ("webhooks", "admin"),
    ("POST", "/webhooks/<webhook_id>/test"): ("webhooks", "admin"),
    ("POST", "/webhooks/deliveries/<delivery_id>/replay"): ("webhooks", "admin"),
    ("POST", "/task/<task_id>/move"): ("queue", "operator"),
    ("POST", "/task/<task_id>/jump"): ("queue", "operator"),
    ("POST", "/sequences/<sequence_id>/move"): ("queue", "operator"),
    ("POST", "/sequences/<sequence_id>/jump"): ("queue", "operator"),
    ("POST", "/queue/drain"): ("queue", "operator"),
    ("POST", "/queue/maintenance"): ("queue", "operator"),
    ("POST", "/queue/open"): ("queue", "operator"),
    ("GET", "/maintenance"): ("read", "viewer"),
}
RANK = {None: 0, "viewer": 1, "operator": 2, "admin": 3}

# A harmless request per route: (path, query, JSON body, status when allowed). Ids that
# do not exist; dry runs; a user that exists already (409) or does not (404).
REQUESTS: dict[tuple[str, str], tuple[str, dict[str, str], Any, int]] = {
    ("GET", "/"): ("/", {}, None, 200),
    ("POST", "/"): ("/", {"dry_run": "true"}, SCAN, 200),
    ("POST", "/validate"): ("/validate", {}, SCAN, 200),
    ("GET", "/tasks"): ("/tasks", {}, None, 200),
    ("GET", "/tasks.csv"): ("/tasks.csv", {}, None, 200),
    ("GET", "/task/<task_id>"): ("/task/task_nope", {}, None, 404),
    ("DELETE", "/task/<task_id>"): ("/task/task_nope", {}, None, 404),
    ("POST", "/task/<task_id>/cancel"): ("/task/task_nope/cancel", {}, None, 404),
    ("POST", "/task/<task_id>/retry"): ("/task/task_nope/retry", {}, None, 404),
    ("GET", "/task/<task_id>/transcript"): ("/task/task_nope/transcript", {}, None, 404),
    ("GET", "/queue/status"): ("/queue/status", {}, None, 200),
    ("POST", "/queue/pause"): ("/queue/pause", {}, None, 200),
    ("POST", "/queue/resume"): ("/queue/resume", {}, None, 200),
    ("POST", "/robot/stop"): ("/robot/stop", {}, None, 200),
    ("GET", "/robot"): ("/robot", {}, None, 200),
    ("GET", "/health"): ("/health", {}, None, 200),
    ("GET", "/commands"): ("/commands", {}, None, 200),
    ("GET", "/metrics"): ("/metrics", {}, None, 200),
    ("GET", "/events"): ("/events", {}, None, 200),
    ("GET", "/openapi.json"): ("/openapi.json", {}, None, 200),
    ("GET", "/static/<name>"): ("/static/app.js", {}, None, 200),
    ("POST", "/sequences"): ("/sequences", {"dry_run": "true"}, SEQ, 200),
    ("GET", "/sequences"): ("/sequences", {}, None, 200),
    ("GET", "/sequences/<sequence_id>"): ("/sequences/seq_nope", {}, None, 404),
    ("POST", "/sequences/<sequence_id>/recover"):
        ("/sequences/seq_nope/recover", {}, {"action": "abort"}, 404),
    ("POST", "/sequences/<sequence_id>/confirm"): ("/sequences/seq_nope/confirm", {}, None, 404),
    ("POST", "/sequences/<sequence_id>/cancel"): ("/sequences/seq_nope/cancel", {}, None, 404),
    ("POST", "/sequences/<sequence_id>/fixit"): ("/sequences/seq_nope/fixit", {}, HOME, 404),
    ("GET", "/me"): ("/me", {}, None, 200),
    ("GET", "/admin/users"): ("/admin/users", {}, None, 200),
    ("POST", "/admin/users"): ("/admin/users", {}, {"name": "alice", "role": "operator"}, 409),
    ("POST", "/admin/users/<name>/token"): ("/admin/users/nobody/token", {}, None, 404),
    ("DELETE", "/admin/users/<name>"): ("/admin/users/nobody", {}, None, 404),
    ("GET", "/audit"): ("/audit", {}, None, 200),
    ("GET", "/audit.csv"): ("/audit.csv", {}, None, 200),
    ("GET", "/audit/verify"): ("/audit/verify", {}, None, 200),
    ("GET", "/webhooks"): ("/webhooks", {}, None, 200),
    ("POST", "/webhooks"): ("/webhooks", {}, {"url": "http://8.8.8.8/", "events": ["*"]}, 422),
    ("PATCH", "/webhooks/<webhook_id>"): ("/webhooks/wh_nope", {}, {"enabled": False}, 404),
    ("DELETE", "/webhooks/<webhook_id>"): ("/webhooks/wh_nope", {}, None, 404),
    ("GET", "/webhooks/<webhook_id>/deliveries"): ("/webhooks/wh_nope/deliveries", {}, None, 404),
    ("POST", "/webhooks/<webhook_id>/test"): ("/webhooks/wh_nope/test", {}, None, 404),
    ("POST", "/webhooks/deliveries/<delivery_id>/replay"):
        ("/webhooks/deliveries/99999/replay", {}, None, 404),
    ("POST", "/task/<task_id>/move"): ("/task/task_nope/move", {}, {"position": 1}, 404),
    ("POST", "/task/<task_id>/jump"): ("/task/task_nope/jump", {}, None, 404),
    ("POST", "/sequences/<sequence_id>/move"): ("/sequences/seq_nope/move", {},
                                                 {"position": 1}, 404),
    ("POST", "/sequences/<sequence_id>/jump"): ("/sequences/seq_nope/jump", {}, None, 404),
    # Without a reason: refused (400), nothing changes.
    ("POST", "/queue/drain"): ("/queue/drain", {}, {}, 400),
    ("POST", "/queue/maintenance"): ("/queue/maintenance", {}, {}, 400),
    ("POST", "/queue/open"): ("/queue/open", {}, None, 200),
    ("GET", "/maintenance"): ("/maintenance", {}, None, 200),
}


def auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def call(url: str, method: str, path: str, token: str | None = None, *, body: Any = None,
         query: dict[str, str] | None = None, headers: dict[str, str] | None = None,
         stream: bool = False) -> requests.Response:
    r = requests.request(method, url + path, params=query, json=body, stream=stream,
                         headers={**auth(token), **(headers or {})}, timeout=15)
    if stream and r.status_code == 200:
        r.close()  # /events: its status line is the answer
    return r


@dataclass
class Lab:
    server: RobotServer
    url: str
    tokens: dict[str, str]  # role or person -> token

    def as_admin(self, method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return call(self.url, method, path, ADMIN_TOKEN, body=body, **kw)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One server for the matrix and own-versus-others: --api-token (the principal
    `admin`), a viewer, two operators and a named admin."""
    db = str(tmp_path_factory.mktemp("roles") / "tasks.db")
    server = RobotServer(suite_settings(db, api_token=ADMIN_TOKEN), static_dir=STATIC_DIR)
    server.start()
    try:
        tokens = {"viewer": add_principal(server.url, "vera", "viewer", ADMIN_TOKEN),
                  "operator": add_principal(server.url, "alice", "operator", ADMIN_TOKEN),
                  "bob": add_principal(server.url, "bob", "operator", ADMIN_TOKEN),
                  "admin": add_principal(server.url, "root", "admin", ADMIN_TOKEN)}
        yield Lab(server, server.url, tokens)
    finally:
        server.stop()


# -- the table ----------------------------------------------------------------------------------
def test_every_route_is_in_the_hand_table_with_its_permission() -> None:
    routes = build_router().routes()
    table = {(m, p): perm for m, p, perm in routes}
    assert len(table) == len(routes), "a route is declared twice"
    assert sorted(table) == sorted(EXPECTED), (
        f"not in the hand table: {sorted(set(table) - set(EXPECTED))}; "
        f"gone from the router: {sorted(set(EXPECTED) - set(table))}")
    for key, perm in table.items():
        assert perm and (perm == PUBLIC or perm in PERMISSIONS), (key, perm)
        assert perm == EXPECTED[key][0], (key, perm, EXPECTED[key])
        assert perm != "others", key  # `others` is never a route's own
    assert sorted(REQUESTS) == sorted(EXPECTED)


def test_a_route_cannot_be_added_without_a_known_permission() -> None:
    r = Router()

    def func(req: Any) -> Any:
        return None

    with pytest.raises(TypeError):
        r.add("GET", "/x", func)  # type: ignore[call-arg]
    for bad in ("", "nobody", "others "):
        with pytest.raises(ValueError):
            r.add("GET", "/x", func, bad)
    assert r.routes() == []


# -- the matrix ---------------------------------------------------------------------------------
def test_every_route_against_every_role_and_no_token(lab: Lab) -> None:
    me = {role: call(lab.url, "GET", "/me", lab.tokens[role]).json()
          for role in ("viewer", "operator", "admin")}
    assert {role: doc["role"] for role, doc in me.items()} == {
        "viewer": "viewer", "operator": "operator", "admin": "admin"}
    assert me["viewer"]["permissions"] == ["read", "stop"]
    assert me["operator"]["permissions"] == ["read", "stop", "submit", "cancel", "queue",
                                             "sequence"]
    assert me["admin"]["permissions"] == list(PERMISSIONS)
    assert all(doc["auth_required"] is True for doc in me.values())

    problems: list[str] = []
    for role in (None, "viewer", "operator", "admin"):
        token = None if role is None else lab.tokens[role]
        for (method, pattern), (perm, least) in EXPECTED.items():
            path, query, body, ok_status = REQUESTS[(method, pattern)]
            r = call(lab.url, method, path, token, body=body, query=query,
                     stream=pattern == "/events")
            where = f"{role or 'no token'}: {method} {pattern} -> {r.status_code}"
            if least is None or (role is not None and RANK[role] >= RANK[least]):
                if r.status_code != ok_status:
                    problems.append(f"{where}, expected {ok_status}: {r.text[:200]}")
            elif role is None:
                if r.status_code != 401 or r.json()["code"] != "not_authenticated" \
                        or r.headers.get("WWW-Authenticate") != 'Bearer realm="robot"':
                    problems.append(f"{where}, expected 401 not_authenticated: {r.text[:200]}")
            else:
                doc = r.json() if r.status_code == 403 else {}
                if r.status_code != 403 or doc.get("code") != "forbidden" \
                        or doc.get("permission") != perm or perm not in doc.get("message", ""):
                    problems.append(f"{where}, expected 403 forbidden naming {perm!r}: "
                                    f"{r.text[:200]}")
            if pattern in ("/robot/stop", "/queue/pause") and r.status_code == 200:
                assert lab.as_admin("POST", "/queue/resume").status_code == 200
    assert not problems, "\n".join(problems)
    assert lab.as_admin("GET", "/queue/status").json()["paused"] is False


# -- own versus others' ---------------------------------------------------------------------------
def test_operators_act_on_their_own_work_and_admins_on_anyones(lab: Lab) -> None:
    alice, bob, root = lab.tokens["operator"], lab.tokens["bob"], lab.tokens["admin"]
    assert call(lab.url, "POST", "/queue/pause", alice).status_code == 200
    try:
        def submit(token: str) -> str:
            r = call(lab.url, "POST", "/", token, body=SCAN)
            assert r.status_code == 202, r.text
            return str(r.json()["task_id"])

        def others(r: requests.Response) -> None:
            assert r.status_code == 403, r.text
            assert r.json()["code"] == "forbidden" and r.json()["permission"] == "others"

        mine = submit(alice)
        assert lab.as_admin("GET", f"/task/{mine}").json()["submitted_by"] == "alice"
        others(call(lab.url, "DELETE", f"/task/{mine}", bob))
        others(call(lab.url, "POST", f"/task/{mine}/cancel", bob))
        others(call(lab.url, "POST", f"/task/{mine}/retry", bob))
        assert lab.as_admin("GET", f"/task/{mine}").json()["status"] == "pending"
        r = call(lab.url, "POST", f"/task/{mine}/cancel", alice)
        assert r.status_code == 200 and r.json()["code"] == "cancelled", r.text
        others(call(lab.url, "POST", f"/task/{mine}/retry", bob))  # cancelled: still hers
        r = call(lab.url, "POST", f"/task/{mine}/retry", alice)
        assert r.status_code == 202 and r.json()["code"] == "requeued", r.text
        again = r.json()["task_id"]
        assert call(lab.url, "DELETE", f"/task/{again}", alice).status_code == 200

        bobs = submit(bob)
        r = call(lab.url, "DELETE", f"/task/{bobs}", root)
        assert r.status_code == 200 and r.json()["code"] == "cancelled", r.text
        doc = lab.as_admin("GET", f"/task/{bobs}").json()
        assert (doc["status"], doc["submitted_by"], doc["cancelled_by"]) == (
            "cancelled", "bob", "root")
        r = call(lab.url, "POST", f"/task/{bobs}/retry", root)  # an admin retries anyone's
        assert r.status_code == 202, r.text
        assert call(lab.url, "DELETE", f"/task/{r.json()['task_id']}", root).status_code == 200

        def sequence(token: str) -> str:
            r = call(lab.url, "POST", "/sequences", token, body=SEQ)
            assert r.status_code == 202, r.text
            return str(r.json()["sequence_id"])

        hers = sequence(alice)
        others(call(lab.url, "POST", f"/sequences/{hers}/cancel", bob))
        assert lab.as_admin("GET", f"/sequences/{hers}").json()["status"] == "pending"
        r = call(lab.url, "POST", f"/sequences/{hers}/cancel", alice)
        assert r.status_code == 200, r.text
        assert r.json()["sequence"]["cancelled_by"] == "alice"
        his = sequence(bob)
        r = call(lab.url, "POST", f"/sequences/{his}/cancel", root)
        assert r.status_code == 200, r.text
        doc = lab.as_admin("GET", f"/sequences/{his}").json()
        assert (doc["status"], doc["submitted_by"], doc["cancelled_by"]) == (
            "cancelled", "bob", "root")
    finally:
        assert lab.as_admin("POST", "/queue/resume").status_code == 200


# -- --require-reason ------------------------------------------------------------------------------
def test_require_reason(make_server) -> None:
    server = make_server(api_token=ADMIN_TOKEN, require_reason=True)
    url, sim = server.url, server.simulator
    assert sim is not None
    alice = add_principal(url, "alice", "operator", ADMIN_TOKEN)
    assert call(url, "GET", "/me", alice).json()["require_reason"] is True

    def needs_reason(r: requests.Response) -> None:
        assert r.status_code == 400 and r.json()["code"] == "reason_required", r.text

    # Recover of a held sequence.
    sim.fault_next("HOME")
    r = call(url, "POST", "/sequences", alice, body=SEQ)
    assert r.status_code == 202, r.text
    sid = r.json()["sequence_id"]
    wait_until(lambda: call(url, "GET", f"/sequences/{sid}", alice).json()["status"] == "held",
               message="held")
    needs_reason(call(url, "POST", f"/sequences/{sid}/recover", alice, body={"action": "abort"}))
    assert call(url, "GET", f"/sequences/{sid}", alice).json()["status"] == "held"
    r = call(url, "POST", f"/sequences/{sid}/recover", alice,
             body={"action": "abort", "reason": "rack B jammed"})
    assert r.status_code == 200, r.text
    assert r.json()["sequence"]["recovered_by"] == "alice"

    # Cancelling another's task; one's own needs no reason.
    assert call(url, "POST", "/queue/pause", alice).status_code == 200  # no reason needed
    task_ids = []
    for _ in range(2):
        r = call(url, "POST", "/", alice, body=SCAN)
        assert r.status_code == 202, r.text
        task_ids.append(r.json()["task_id"])
    needs_reason(call(url, "DELETE", f"/task/{task_ids[0]}", ADMIN_TOKEN))
    r = call(url, "DELETE", f"/task/{task_ids[0]}", ADMIN_TOKEN,
             headers={"X-Reason": "wrong rack"})
    assert r.status_code == 200, r.text
    assert call(url, "POST", f"/task/{task_ids[1]}/cancel", alice).status_code == 200

    # Resume.
    needs_reason(call(url, "POST", "/queue/resume", alice))
    assert call(url, "GET", "/queue/status", alice).json()["paused"] is True
    r = call(url, "POST", "/queue/resume", alice, headers={"X-Reason": "rack reloaded"})
    assert r.status_code == 200, r.text
    assert call(url, "GET", "/queue/status", alice).json()["paused"] is False


# -- nothing set up --------------------------------------------------------------------------------
def test_nothing_set_up_is_anonymous_admin(server) -> None:
    me = requests.get(server.url + "/me", timeout=10).json()
    assert me["name"] == "anonymous" and me["role"] == "admin" and me["kind"] == "anonymous"
    assert me["auth_required"] is False and me["permissions"] == list(PERMISSIONS)
    r = requests.post(server.url + "/", json=SCAN, timeout=10)
    assert r.status_code == 202, r.text
    doc = requests.get(f"{server.url}/task/{r.json()['task_id']}", timeout=10).json()
    assert doc["submitted_by"] == "anonymous"
    # The first principal made over HTTP needs no token; from then on one is needed.
    token = add_principal(server.url, "alice", "operator")
    assert requests.get(server.url + "/me", timeout=10).status_code == 401
    assert call(server.url, "GET", "/me", token).json()["name"] == "alice"


# -- the lock-out ----------------------------------------------------------------------------------
def test_ten_bad_tokens_lock_the_address_out_but_stop_still_works(make_server) -> None:
    server = make_server(api_token=ADMIN_TOKEN)
    url = server.url
    for n in range(10):
        r = call(url, "GET", "/queue/status", f"wrong-{n}")
        assert r.status_code == 401, (n, r.text)
    r = call(url, "GET", "/queue/status", ADMIN_TOKEN)
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "too_many_bad_tokens" and r.headers["Retry-After"] == "60"
    assert call(url, "POST", "/", ADMIN_TOKEN, body=SCAN).status_code == 429
    assert call(url, "POST", "/robot/stop").status_code == 429  # no token: no way through
    assert call(url, "GET", "/health").status_code == 200  # public
    r = call(url, "POST", "/robot/stop", ADMIN_TOKEN)
    assert r.status_code == 200 and r.json()["code"] == "stop_sent", r.text
    assert server.manager.paused
    # The audit trail (read from the store: GET /audit is locked out too).
    assert server.store is not None
    rows = server.store.audit_page(limit=100)
    lockouts = [e for e in rows if e["action"] == "auth.lockout"]
    assert len(lockouts) == 1, rows
    assert lockouts[0]["status"] == 429 and lockouts[0]["address"] == "127.0.0.1"
    refused = [e for e in rows if e["action"] == "auth.refused"]
    assert len(refused) == 10 and {e["status"] for e in refused} == {401}
    assert [e["action"] for e in rows if e["principal"] == "admin"] == ["robot.stop"]


def test_the_lock_out_ends_after_a_minute(tmp_path) -> None:
    store = TaskStore(str(tmp_path / "tasks.db"))
    store.open()
    try:
        principals = PrincipalStore(store)
        _, token = principals.add("alice", "operator", "person",
                                  audit=AuditEntry("console", "admin", "local", "user.add"))
        now = [1000.0]
        identity = Identity(principals, replace(Settings(), api_token=None),
                            clock=lambda: now[0])
        good, here = {"X-API-Key": token}, "10.0.0.5"

        def refused(headers: dict[str, str], address: str = here,
                    permission: str = "read") -> Refused:
            with pytest.raises(Refused) as caught:
                identity.authorize(permission, headers, address)
            return caught.value

        # Ten bad tokens spread over more than a minute: no lock-out.
        for n in range(10):
            bad = refused({"X-API-Key": f"bad{n}"})
            assert bad.status == 401 and not bad.lockout
            now[0] += 7
        assert identity.authorize("read", good, here).name == "alice"
        now[0] += WINDOW_S + 1
        # Ten within a minute: the tenth starts it (still a 401), then 429 for 60 s.
        starts = [refused({"X-API-Key": f"worse{n}"}).lockout for n in range(10)]
        assert starts == [False] * 9 + [True]
        assert refused(good).status == 429
        assert identity.authorize("read", good, "10.0.0.6").name == "alice"  # another address
        assert identity.authorize("stop", good, here).name == "alice"
        assert refused({}, permission="stop").status == 429
        now[0] += LOCK_S - 0.5
        assert refused(good).status == 429
        now[0] += 1.0
        assert identity.authorize("read", good, here).name == "alice"
        assert refused({"X-API-Key": "bad"}).status == 401  # counting starts again
    finally:
        store.close()
