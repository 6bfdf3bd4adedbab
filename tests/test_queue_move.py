"""Moving waiting work (docs/queue.md): move, before/after and jump of a task, a sequence
as one block, the refusals, concurrent moves and submits, and the order after a restart.
A real server over loopback, the simulator on a real pty: the order is checked on the
wire, by the MOVE_TO x values the robot received."""

from __future__ import annotations

import random
import sqlite3
import threading
from typing import Any

import requests

from server.runtime import RobotServer
from tests.conftest import Client, wait_until


def move(x: float) -> dict[str, Any]:
    return {"cmd_type": "MOVE_TO", "params": {"x": x, "y": 0.0, "z": 0.0}}


def wire_x(server: RobotServer) -> list[float]:
    assert server.simulator is not None
    return [c["params"]["x"] for c in server.simulator.commands() if c.get("cmd") == "MOVE_TO"]


def pending(client: Client) -> list[str]:
    return list(client.status()["pending"])


def post_move(client: Client, task_id: str, body: Any, kind: str = "task") -> dict[str, Any]:
    r = client.post(f"/{kind}/{task_id}/move", body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def stored_order(db: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute(
            "SELECT task_id FROM tasks WHERE status = 'pending' ORDER BY COALESCE(rank, seq)")]


def test_move_before_after_position_and_jump_change_what_the_robot_runs(
        server: RobotServer, client: Client) -> None:
    client.post("/queue/pause")
    ids = [client.submit(move(x)) for x in (1, 2, 3, 4, 5)]
    t1, t2, t3, t4, t5 = ids
    version = client.status()["version"]

    r = client.post(f"/task/{t5}/jump")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == "moved" and body["task_id"] == t5 and body["queue_position"] == 1
    assert body["pending"] == [t5, t1, t2, t3, t4] == pending(client)
    assert client.status()["version"] > version

    assert post_move(client, t1, {"after": t3})["pending"] == [t5, t2, t3, t1, t4]
    assert post_move(client, t4, {"before": t2})["pending"] == [t5, t4, t2, t3, t1]
    moved = post_move(client, t2, {"position": 1})
    assert moved["pending"] == [t2, t5, t4, t3, t1] and moved["queue_position"] == 1
    assert post_move(client, t3, {"position": 99})["pending"] == [t2, t5, t4, t1, t3]
    assert client.task(t4)["queue_position"] == 3
    assert stored_order(server.settings.db) == [t2, t5, t4, t1, t3]

    client.post("/queue/resume")
    for task_id in ids:
        assert client.wait_final(task_id)["status"] == "completed"
    assert wire_x(server) == [2, 5, 4, 1, 3]
    # Each move is in the audit trail, with the position before and after.
    rows = client.get("/audit", params={"action": "task.move"}).json()
    moves = [row for row in rows.get("entries", rows.get("rows", []))
             if row["action"] == "task.move"]
    assert len(moves) == 5 and {m["target"] for m in moves} == {t5, t1, t4, t2, t3}
    assert {(m["target"], m["before"], m["after"]) for m in moves} >= {(t5, "5", "1")}


def test_refusals_change_nothing(server: RobotServer, client: Client) -> None:
    client.post("/queue/pause")
    seq = client.post("/sequences", {"steps": [move(10), move(11)]}).json()
    a, b = client.submit(move(1)), client.submit(move(2))
    before = pending(client)
    steps = before[:2]
    cases = [
        (f"/task/{a}/move", {"position": 1, "before": b}, 400, "move_body_invalid"),
        (f"/task/{a}/move", {"position": 0}, 400, "move_body_invalid"),
        (f"/task/{a}/move", {"position": True}, 400, "move_body_invalid"),
        (f"/task/{a}/move", {"before": 5}, 400, "move_body_invalid"),
        (f"/task/{a}/move", {}, 400, "move_body_invalid"),
        (f"/task/{a}/move", {"position": 1, "extra": 1}, 400, "move_body_invalid"),
        ("/task/task_nope/move", {"position": 1}, 404, "task_not_found"),
        (f"/task/{a}/move", {"before": "task_nope"}, 404, "anchor_not_found"),
        (f"/task/{a}/move", {"after": a}, 409, "anchor_not_queued"),
        (f"/task/{steps[1]}/move", {"position": 1}, 409, "task_in_sequence"),
        ("/sequences/seq_nope/move", {"position": 1}, 404, "sequence_not_found"),
    ]
    for path, body, status, code in cases:
        r = client.post(path, body)
        assert (r.status_code, r.json()["code"]) == (status, code), (path, body, r.text)
        assert r.json()["success"] is False and r.json()["message"]
    assert pending(client) == before

    client.post("/queue/resume")
    done = client.wait_final(b)
    r = client.post(f"/task/{b}/move", {"position": 1})
    assert (r.status_code, r.json()["code"]) == (409, "task_not_pending")
    assert done["status"] in r.json()["message"]
    r = client.post(f"/sequences/{seq['sequence_id']}/jump")
    assert (r.status_code, r.json()["code"]) == (409, "sequence_not_pending")
    client.post("/queue/pause")
    c = client.submit(move(3))
    r = client.post(f"/task/{c}/move", {"before": b})
    assert (r.status_code, r.json()["code"]) == (409, "anchor_not_queued")


def test_a_sequence_moves_as_one_block(server: RobotServer, client: Client) -> None:
    client.post("/queue/pause")
    t1 = client.submit(move(1))
    seq = client.post("/sequences", {"steps": [move(10), move(11)]}).json()
    sid = seq["sequence_id"]
    t2 = client.submit(move(2))
    s1, s2 = pending(client)[1:3]

    body = post_move(client, sid, {"position": 1}, kind="sequences")
    assert body["sequence_id"] == sid and body["pending"] == [s1, s2, t1, t2]
    # Position 2 is inside the sequence: the task lands before it.
    assert post_move(client, t2, {"position": 2})["pending"] == [t2, s1, s2, t1]
    # A step as an anchor stands for its sequence.
    assert post_move(client, t1, {"before": s2})["pending"] == [t2, t1, s1, s2]
    assert post_move(client, t2, {"after": sid})["pending"] == [t1, s1, s2, t2]
    client.post("/queue/resume")
    for task_id in (t1, t2, s1, s2):
        assert client.wait_final(task_id)["status"] == "completed"
    assert wire_x(server) == [1, 10, 11, 2]


def test_concurrent_moves_and_submits_keep_one_consistent_order_across_a_restart(
        make_server: Any) -> None:
    server = make_server()
    client = Client(server)
    client.post("/queue/pause")
    seed = [client.submit(move(x)) for x in range(1, 9)]
    submitted: list[str] = list(seed)
    lock, errors, moves = threading.Lock(), [], []
    stop = threading.Event()

    def submitter(base: int) -> None:
        session = requests.Session()
        for k in range(8):
            r = session.post(server.url + "/", json=move(base + k), timeout=30)
            if r.status_code != 202:
                errors.append(r.text)
                return
            with lock:
                submitted.append(r.json()["task_id"])

    def mover(seed_: int) -> None:
        rnd, session = random.Random(seed_), requests.Session()
        for _ in range(10_000):  # at least 10 each, then until the submits are done
            if stop.is_set() and len(moves) >= 40:
                break
            with lock:
                ids = list(submitted)
            task_id = rnd.choice(ids)
            choice = rnd.randrange(4)
            if choice == 0:
                r = session.post(f"{server.url}/task/{task_id}/jump", timeout=30)
            else:
                where = [{"position": rnd.randint(1, len(ids))}, {"before": rnd.choice(ids)},
                         {"after": rnd.choice(ids)}][choice - 1]
                r = session.post(f"{server.url}/task/{task_id}/move", json=where, timeout=30)
            if r.status_code != 200 and r.json().get("code") != "anchor_not_queued":
                errors.append(r.text)
                return
            moves.append(r.status_code)

    submitters = [threading.Thread(target=submitter, args=(100 * (n + 1),)) for n in range(4)]
    movers = [threading.Thread(target=mover, args=(n,)) for n in range(4)]
    for t in submitters + movers:
        t.start()
    for t in submitters:
        t.join(60)
    stop.set()
    for t in movers:
        t.join(60)
    assert not errors, errors[:3]
    assert moves.count(200) >= 20  # the moves really interleaved with the submits
    assert len(submitted) == len(set(submitted)) == 8 + 32

    order = list(server.manager.state.pending)
    assert sorted(order) == sorted(submitted)  # none lost, none twice
    keys = [server.manager.state.pending[t][0] for t in order]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert stored_order(server.settings.db) == order
    assert list(server.manager.state.entries) == order  # the worker's line is that order

    db = server.settings.db
    server.stop()
    again = make_server(db=db)
    assert list(again.manager.state.pending) == order
    client = Client(again)
    assert pending(client) == order[:len(pending(client))]
    xs = {t: client.task(t)["params"]["x"] for t in order}
    client.post("/queue/resume")
    wait_until(lambda: client.status()["completed_tasks"] == len(order), 30,
               message="every task ran")
    assert wire_x(again) == [xs[t] for t in order]
