"""The server PC's command line of issue 31 (docs/security.md): `python main.py users
add|list|revoke|token` and `audit verify`, run as real subprocesses on the database of a
real server that is running meanwhile (WAL; they never take its instance lock); tokens
kept only as their SHA-256; a tampered audit trail caught, with the real `sqlite3` shell.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from server import users_cli
from tests.conftest import ROOT, SCAN, wait_until
from tests.proc import ServerProcess

CLEAN = ("ROBOT_API_TOKEN", "ROBOT_DB", "ROBOT_SERVER_URL", "ROBOT_LANG", "LANG", "LC_ALL")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def main_py(*args: str, db: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    return subprocess.run([sys.executable, "main.py", *args, "--db", db], cwd=ROOT,
                          capture_output=True, text=True, encoding="utf-8", timeout=60,
                          env={**env, "ROBOT_LANG": "en", "PYTHONIOENCODING": "utf-8"})


def add(db: str, name: str, role: str, *flags: str) -> str:
    """`users add`: its token, the only line on standard output."""
    done = main_py("users", "add", name, "--role", role, *flags, db=db)
    assert done.returncode == 0, done
    assert TOKEN.match(done.stdout.strip()), done.stdout
    assert "will not be shown again" in done.stderr, done.stderr
    return done.stdout.strip()


class _From(HTTPAdapter):
    """Requests from one loopback address: each phase of a test has its own, so the
    bad tokens its polls present never add up to a lock-out (10 within 60 s)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def me(url: str, token: str | None, source: str = "127.0.0.1") -> requests.Response:
    with requests.Session() as session:
        session.mount("http://", _From(source))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return session.get(url + "/me", headers=headers, timeout=10)


def becomes(url: str, token: str | None, status: int, source: str) -> requests.Response:
    """Poll GET /me until it answers ``status``: a running server reads principals at
    most once a second, so a change on the command line shows within about that."""
    seen: list[requests.Response] = []

    def answered() -> bool:
        seen.append(me(url, token, source))
        return seen[-1].status_code == status

    wait_until(answered, 5, 0.1, f"GET /me answering {status}")
    return seen[-1]


@pytest.fixture(autouse=True)
def _no_token_in_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ROBOT_API_TOKEN", "ROBOT_DB"):
        monkeypatch.delenv(name, raising=False)


# -- users: the round trip against a running server ----------------------------------------
def test_users_round_trip_while_the_server_runs(make_server: Callable[..., Any]) -> None:
    server = make_server()
    db, url = server.settings.db, server.url
    assert me(url, None).json()["name"] == "anonymous"  # nothing set up: open, as before

    wang = add(db, "wang", "admin")
    becomes(url, None, 401, "127.0.0.2")  # a principal exists: no token, no answer
    who = me(url, wang).json()
    assert (who["name"], who["role"], who["kind"], who["auth_required"]) == (
        "wang", "admin", "person", True)
    alice = add(db, "alice", "operator", "--kind", "program")
    assert becomes(url, alice, 200, "127.0.0.3").json()["role"] == "operator"

    again = main_py("users", "add", "alice", "--role", "viewer", db=db)
    assert again.returncode == 1 and again.stdout == "", again
    assert again.stderr.strip() == "a principal named alice already exists"
    for name, role in (("bad name", "viewer"), ("console", "viewer"), ("bob", "boss")):
        refused = main_py("users", "add", name, "--role", role, db=db)
        assert refused.returncode == 2 and "error:" in refused.stderr, refused
        assert refused.stdout == ""

    replaced = main_py("users", "token", "alice", db=db)
    assert replaced.returncode == 0, replaced
    new = replaced.stdout.strip()
    assert TOKEN.match(new) and new != alice and "will not be shown again" in replaced.stderr
    becomes(url, alice, 401, "127.0.0.4")  # the old token stops working...
    assert me(url, new).json()["name"] == "alice"  # ...as the new one starts

    revoked = main_py("users", "revoke", "alice", db=db)
    assert revoked.returncode == 0 and "Revoked alice" in revoked.stdout, revoked
    becomes(url, new, 401, "127.0.0.5")
    assert me(url, wang).status_code == 200  # the others keep working
    for action in ("revoke", "token"):
        unknown = main_py("users", action, "nobody", db=db)
        assert unknown.returncode == 1 and "no principal named nobody" in unknown.stderr

    listed = main_py("users", "list", db=db)
    assert listed.returncode == 0, listed
    head, *rows = [line.split() for line in listed.stdout.splitlines()]
    assert head == ["name", "role", "kind", "created", "created", "by", "revoked"]
    by_name = {row[0]: row for row in rows}
    assert by_name["alice"][1:3] == ["operator", "program"]
    assert by_name["alice"][4] == "console" and by_name["alice"][5].endswith("Z")
    assert by_name["wang"][1:3] == ["admin", "person"] and by_name["wang"][5] == "-"
    for secret in (wang, alice, new):
        assert secret not in listed.stdout
        assert hashlib.sha256(secret.encode()).hexdigest() not in listed.stdout

    # Each change is in the audit trail as the server PC's console, in order.
    entries = requests.get(url + "/audit", headers={"Authorization": f"Bearer {wang}"},
                           params={"principal": "console"}, timeout=10).json()["entries"]
    assert [(e["action"], e["target"]) for e in reversed(entries)] == [
        ("user.add", "wang"), ("user.add", "alice"), ("user.token", "alice"),
        ("user.revoke", "alice")]
    assert {(e["role"], e["address"], e["status"]) for e in entries} == {("admin", "local",
                                                                          None)}
    assert entries[0]["before"] == "operator" and entries[0]["after"] == "revoked"


def test_a_mistyped_db_is_not_created_and_kinds_agree(tmp_path) -> None:
    from tasks.store.principals import KINDS

    assert users_cli.KINDS == KINDS  # argparse's choices, kept without importing tasks
    missing = str(tmp_path / "typo.db")
    for args in (("users", "list"), ("users", "revoke", "x"), ("audit", "verify")):
        done = main_py(*args, db=missing)
        assert done.returncode == 1 and f"No task database at {missing}" in done.stderr
    assert os.listdir(tmp_path) == []
    empty = str(tmp_path / "empty.db")
    add(empty, "first", "admin")  # add creates it: set up before the first start
    done = main_py("--lang", "zh", "users", "list", db=empty)
    assert done.stdout.splitlines()[0].split() == ["名称", "角色", "类型", "创建时间", "创建者",
                                                   "撤销时间"]


# -- tokens only as hashes ------------------------------------------------------------------
def test_tokens_are_kept_only_as_hashes_in_the_database_and_the_logs(tmp_path) -> None:
    """Also: the banner of a server with principals, and `serve --require-reason`."""
    db, log = str(tmp_path / "tasks.db"), str(tmp_path / "server.log")
    tokens = [add(db, "alice", "operator"), add(db, "lims", "admin", "--kind", "program")]
    # All interfaces: an open server would warn that anyone may queue commands.
    srv = ServerProcess(db, "sim", "--host", "0.0.0.0", "--sim-speed", "200", "--log-file", log,
                        "--access-log", "file", "--log-level", "DEBUG", "--require-reason")
    try:
        srv.wait_ready()
        alice = {"Authorization": f"Bearer {tokens[0]}"}
        lims = {"X-API-Key": tokens[1]}
        assert srv.get("/me", headers=alice).json()["require_reason"] is True
        r = srv.post("/queue/resume", headers=alice)  # --require-reason: resuming says why
        assert (r.status_code, r.json()["code"]) == (400, "reason_required"), r.text
        assert srv.post("/queue/resume", headers={**alice, "X-Reason": "ok"}).status_code == 200
        task = srv.post("/", SCAN, headers=alice).json()["task_id"]
        assert srv.get(f"/task/{task}", headers=lims, params={"wait": 10}).status_code == 200
        r = srv.post("/admin/users/alice/token", headers=lims)
        assert r.status_code == 200, r.text
        tokens.append(r.json()["token"])
        assert srv.get("/me", headers={"X-API-Key": tokens[2]}).status_code == 200
        assert srv.get("/me", headers=alice).status_code == 401
    finally:
        code, out = srv.terminate()
    assert code == 0, out
    assert "Access: 2 principal(s)" in out and "No API token" not in out, out
    files = [db, db + "-wal", *glob.glob(log + "*")]
    stored = b"".join(pathlib.Path(f).read_bytes() for f in files if os.path.exists(f))
    assert b"GET /me" in stored  # the access log is in there
    for token in tokens:
        assert token.encode() not in stored and token not in out
    for current in (tokens[1], tokens[2]):
        assert hashlib.sha256(current.encode()).hexdigest().encode() in stored


# -- tampering is caught --------------------------------------------------------------------
needs_sqlite3 = pytest.mark.skipif(shutil.which("sqlite3") is None,
                                   reason="the sqlite3 shell is not installed (apt sqlite3)")


def sqlite3_shell(db: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sqlite3", "-bail", "-cmd", ".timeout 5000", db, sql],
                          capture_output=True, text=True, timeout=30)


def verify_over_http(url: str, token: str) -> dict[str, Any]:
    return requests.get(url + "/audit/verify", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).json()


@needs_sqlite3
def test_an_altered_audit_row_is_caught(make_server: Callable[..., Any]) -> None:
    server = make_server()
    db, url = server.settings.db, server.url
    assert requests.post(url + "/queue/pause", timeout=10).status_code == 200  # anonymous
    assert requests.post(url + "/queue/resume", timeout=10).status_code == 200
    token = add(db, "wang", "admin")
    ok = main_py("audit", "verify", db=db)
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok: 3 rows, chain intact"), ok
    assert wait_until(lambda: verify_over_http(url, token) == {"ok": True, "rows": 3}, 5, 0.1)

    refused = sqlite3_shell(db, "UPDATE audit SET reason='x' WHERE seq=2;")
    assert refused.returncode != 0 and "append-only" in refused.stderr, refused
    assert main_py("audit", "verify", db=db).returncode == 0

    done = sqlite3_shell(db, "DROP TRIGGER audit_no_update; "
                             "UPDATE audit SET reason='x' WHERE seq=2;")
    assert done.returncode == 0, done
    bad = main_py("audit", "verify", db=db)
    assert bad.returncode == 1
    assert bad.stdout.strip() == ("audit trail broken at row 2: its content does not match "
                                  "its hash (changed after it was written)")
    zh = main_py("--lang", "zh", "audit", "verify", db=db)
    assert zh.returncode == 1 and zh.stdout.startswith("审计记录在第 2 条处损坏"), zh
    answer = verify_over_http(url, token)
    assert (answer["ok"], answer["first_bad"], answer["rows"]) == (False, 2, 2), answer


@needs_sqlite3
def test_a_deleted_audit_row_is_caught(make_server: Callable[..., Any], tmp_path) -> None:
    db = str(tmp_path / "tasks.db")
    token = add(db, "wang", "admin")
    for name in ("li", "chen"):
        add(db, name, "operator")
    assert main_py("users", "revoke", "chen", db=db).returncode == 0  # 4 rows

    refused = sqlite3_shell(db, "DELETE FROM audit WHERE seq=2;")
    assert refused.returncode != 0 and "append-only" in refused.stderr, refused
    done = sqlite3_shell(db, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq=2;")
    assert done.returncode == 0, done

    bad = main_py("audit", "verify", db=db)
    assert bad.returncode == 1
    assert bad.stdout.strip() == "audit trail broken at row 3: row 2 before it is missing"
    server = make_server()  # on the same file: its own check agrees
    answer = verify_over_http(server.url, token)
    assert (answer["ok"], answer["first_bad"]) == (False, 3), answer
    assert "row 2 is missing" in answer["problem"]
