"""The queue as an operator shapes it (docs/queue.md), end to end on the real server with
the simulator on a real pty: a task's ``not_before`` (skipped over, on time, after a
restart, for a sequence), drain -> maintenance -> open, maintenance at once, and each
``waiting_for`` reason. (Move and jump: tests/test_queue_move.py.)

MOVE_TO with distinct ``x`` values makes tasks identifiable on the wire. No bare sleeps:
everything polls with a deadline.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from robot import RobotSimulator
from server.runtime import RobotServer
from tests.conftest import Client, wait_until
from tests.sse import SSEReader

ZH = {"Accept-Language": "zh"}
REASON = "清洁机械臂"
ORDER = ("maintenance", "paused", "robot_disconnected", "sequence_held", "not_before",
         "queue_position")


def move(x: float, **extra: Any) -> dict[str, Any]:
    return {"cmd_type": "MOVE_TO", "params": {"x": x, "y": 0.0, "z": 0.0}, **extra}


def slow_scan(positions: int) -> dict[str, Any]:
    """A scan of ``positions`` bottles: 20 s / speed each (0.1 s at the suite's 200)."""
    return {"cmd_type": "SCAN_QRCODE",
            "params": {"rack": "A", "positions": list(range(1, positions + 1))}}


def local(ts: float) -> str:
    """``ts`` in the guide's format, the server's local time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def parse_local(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def whole_second_ahead(seconds: float = 2.5) -> float:
    """A whole second at least ``seconds`` from now (the format has no fractions)."""
    return float(math.ceil(time.time() + seconds))


def xs(sim: RobotSimulator) -> list[float]:
    """The x of every MOVE_TO the robot received, in order."""
    return [c["params"]["x"] for c in sim.commands() if c.get("cmd") == "MOVE_TO"]


def codes(doc: dict[str, Any]) -> list[str]:
    return [w["code"] for w in doc["waiting_for"]]


def in_order(found: list[str]) -> bool:
    """The codes in the contract's order, most fundamental first, each once."""
    return found == sorted(found, key=ORDER.index) and len(set(found)) == len(found)


def mode_of(client: Client) -> str:
    return str(client.status()["queue_mode"])


def refused(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["code"] == code, body
    return body


def stays(client: Client, task_id: str, sim: RobotSimulator, x: float,
          seconds: float = 1.0) -> None:
    """For ``seconds`` (a bounded observation, polled): the task stays pending and its
    MOVE_TO never reaches the robot."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert client.task(task_id)["status"] == "pending"
        assert x not in xs(sim)
        time.sleep(0.05)  # the poll's pace, not synchronisation: the deadline bounds it


@pytest.fixture
def own_sim(tmp_path) -> Iterator[RobotSimulator]:
    """A simulator behind a symlink, so it can be unplugged and replugged."""
    sim = RobotSimulator(200.0, link_path=str(tmp_path / "robot"), heartbeat_s=0.05)
    sim.start()
    yield sim
    sim.stop()


# -- 1. not_before ---------------------------------------------------------------------------
def test_not_before_is_skipped_over_and_starts_on_time(server: RobotServer,
                                                        client: Client) -> None:
    sim = server.simulator
    assert sim is not None
    at = whole_second_ahead()
    r = client.post("/", move(1.0, not_before=local(at)))
    assert r.status_code == 202, r.text
    late = r.json()["task_id"]
    assert client.task(late)["not_before"] == local(at)
    behind = [client.submit(move(x)) for x in (2.0, 3.0)]
    for task_id in behind:
        assert client.wait_final(task_id)["status"] == "completed"
    assert xs(sim) == [2.0, 3.0]  # the ones behind it ran first

    doc = client.task(late)
    assert doc["status"] == "pending" and doc["not_before"] == local(at)
    assert doc["estimated_start_time"] >= local(at), doc  # same format: compares as text
    assert codes(doc) == ["not_before"], doc  # nothing ahead of it
    params = doc["waiting_for"][0]["params"]
    assert params["time"] == local(at) and isinstance(params["seconds"], int)
    assert 0 < params["seconds"] <= 4, params  # at most 3.5 s ahead when submitted
    assert "not before" in doc["waiting_for"][0]["message"]

    received = wait_until(lambda: time.time() if 1.0 in xs(sim) else None, 6, 0.005,
                          "the not_before task on the wire")
    assert at - 0.05 <= received <= at + 1.0, (received, at)
    done = client.wait_final(late)
    assert done["status"] == "completed" and done["not_before"] == local(at)
    assert 0 <= parse_local(done["start_time"]) - at <= 1.0, done
    assert xs(sim) == [2.0, 3.0, 1.0]


def test_not_before_formats_bad_values_and_a_past_time(server: RobotServer,
                                                       client: Client) -> None:
    sim = server.simulator
    assert sim is not None
    ahead = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) \
        + datetime.timedelta(hours=1)
    zulu = ahead.isoformat().replace("+00:00", "Z")
    for x, value in ((50.0, ahead.isoformat()), (51.0, zulu)):  # ...+00:00, ...Z
        doc = client.task(client.submit(move(x, not_before=value)))
        assert doc["not_before"] == local(ahead.timestamp()), doc
        assert doc["estimated_start_time"] >= local(ahead.timestamp()), doc

    before = client.status()
    in_two_years = local(time.time() + 2 * 366 * 86400)
    for bad, code in (("tomorrow", "not_before_invalid"), (12345, "not_before_invalid"),
                      ("2026-13-45 25:61:00", "not_before_invalid"),
                      (in_two_years, "not_before_too_far")):
        body = refused(client.post("/", move(52.0, not_before=bad)), 400, code)
        assert body["message"], body
    after = client.status()
    assert (after["total_tasks"], after["pending_tasks"]) == \
        (before["total_tasks"], before["pending_tasks"]) == (2, 2)

    # A past time starts at its turn: between the two submitted around it.
    assert client.post("/queue/pause").status_code == 200
    ids = [client.submit(move(60.0)), client.submit(move(61.0, not_before="2020-01-01 00:00:00")),
           client.submit(move(62.0))]
    assert client.task(ids[1])["not_before"] == "2020-01-01 00:00:00"
    assert "not_before" not in codes(client.task(ids[1]))
    assert client.post("/queue/resume").status_code == 200
    for task_id in ids:
        assert client.wait_final(task_id)["status"] == "completed"
    assert xs(sim) == [60.0, 61.0, 62.0]  # the hour-ahead ones still wait


def test_not_before_of_a_task_and_a_sequence_survives_a_restart(make_server) -> None:
    server = make_server()
    client, db = Client(server), server.settings.db
    at = whole_second_ahead(3.0)  # time for a restart before it
    late = client.submit(move(1.0, not_before=local(at)))
    r = client.post("/sequences", {"name": "later", "not_before": local(at),
                                   "steps": [move(5.0), move(6.0)]})
    assert r.status_code == 202, r.text
    sid = r.json()["sequence_id"]
    assert client.get(f"/sequences/{sid}").json()["not_before"] == local(at)
    server.stop()

    server = make_server(db=db)
    client, sim = Client(server), server.simulator
    assert sim is not None
    doc = client.task(late)
    assert doc["status"] == "pending" and doc["not_before"] == local(at)
    assert codes(doc) == ["not_before"], doc
    seq = client.get(f"/sequences/{sid}").json()
    assert seq["status"] == "pending" and seq["not_before"] == local(at), seq
    first_step = seq["steps"][0]["task_id"]
    step = client.task(first_step)
    assert "not_before" in codes(step), step  # its sequence's not_before
    assert step["estimated_start_time"] >= local(at), step
    quick = client.submit(move(9.0))  # behind both, it goes first
    assert client.wait_final(quick)["status"] == "completed"
    assert xs(sim) == [9.0] and client.task(late)["status"] == "pending"

    done = client.wait_final(late)
    assert done["status"] == "completed"
    assert 0 <= parse_local(done["start_time"]) - at <= 1.0, done
    seq = wait_until(lambda: (d := client.get(f"/sequences/{sid}").json())["status"]
                     in ("completed", "failed") and d, 10, message="the sequence done")
    assert seq["status"] == "completed", seq
    assert parse_local(client.task(first_step)["start_time"]) >= at
    assert xs(sim) == [9.0, 1.0, 5.0, 6.0]


# -- 2. drain -> maintenance -> open -----------------------------------------------------------
def test_drain_then_maintenance_survives_a_restart_then_open(make_server) -> None:
    server = make_server()
    client, db = Client(server), server.settings.db
    sim = server.simulator
    assert sim is not None
    assert client.post("/queue/pause", {"reason": "loading racks"}).status_code == 200
    done = client.submit(move(0.5))  # a cancelled task, for a retry while draining
    assert client.post(f"/task/{done}/cancel").status_code == 200
    key = {"Idempotency-Key": "before-the-drain"}
    r = client.post("/", move(1.0), headers=key)
    assert r.status_code == 202, r.text
    kept = r.json()["task_id"]
    queued = [kept, client.submit(move(2.0)), client.submit(move(3.0))]
    version = client.status()["version"]

    for no_reason in (None, {}, {"reason": ""}, {"reason": 5}):
        refused(client.post("/queue/drain", no_reason), 400, "maintenance_reason_required")
    refused(client.post("/queue/maintenance"), 400, "maintenance_reason_required")
    status = client.status()
    assert status["queue_mode"] == "open" and status["maintenance"] is None
    assert client.get("/maintenance").json()["count"] == 0

    r = client.post("/queue/drain", {"reason": REASON})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["code"] == "draining" and body["changed"] is True
    assert body["queue_mode"] == "draining" and body["message"]
    window = body["maintenance"]
    assert window["reason"] == REASON and window["opened_by"] == "anonymous"
    assert window["opened_at"] and window["maintenance_at"] is None
    assert client.status()["version"] != version

    r = client.post("/", move(4.0))
    body = refused(r, 503, "draining")
    assert REASON in body["message"] and r.headers["Retry-After"] == "60"
    refused(client.post("/sequences", {"steps": [move(7.0)]}), 503, "draining")
    r = client.post("/", move(1.0), headers=key)  # accepted before: answered, nothing added
    assert r.status_code in (200, 202), r.text
    assert r.json()["task_id"] == kept
    assert client.status()["total_tasks"] == 4
    r = client.post("/queue/drain", {"reason": "again"})
    assert r.status_code == 200 and r.json()["changed"] is False, r.text
    assert r.json()["code"] == "unchanged" and r.json()["maintenance"]["reason"] == REASON

    refused(client.post(f"/task/{done}/retry"), 503, "draining")
    assert client.post("/queue/resume").status_code == 200
    for task_id in queued:
        assert client.wait_final(task_id)["status"] == "completed"
    assert xs(sim) == [1.0, 2.0, 3.0]
    wait_until(lambda: mode_of(client) == "maintenance", 5, message="maintenance once drained")
    status = client.status()
    assert status["maintenance"]["maintenance_at"] and status["maintenance"]["reason"] == REASON
    health = client.get("/health").json()
    assert health["queue_mode"] == "maintenance"
    assert health["maintenance"]["maintenance_at"] == status["maintenance"]["maintenance_at"]
    r = client.post("/queue/maintenance", {"reason": "still"})
    assert r.status_code == 200 and r.json()["changed"] is False, r.text
    refused(client.post("/", move(4.0)), 503, "maintenance")
    server.stop()

    server = make_server(db=db)
    client = Client(server)
    status = client.status()
    assert status["queue_mode"] == "maintenance", status
    assert status["maintenance"]["reason"] == REASON and status["maintenance"]["maintenance_at"]
    r = client.post("/", move(4.0))
    assert REASON in refused(r, 503, "maintenance")["message"]
    assert r.headers["Retry-After"] == "60"

    r = client.post("/queue/open", {"reason": "arm clean"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == "open" and body["changed"] is True
    assert body["queue_mode"] == "open" and body["maintenance"] is None
    assert client.get("/health").json()["queue_mode"] == "open"
    r = client.post("/queue/open")
    assert r.status_code == 200 and r.json()["changed"] is False and r.json()["code"] == "unchanged"
    assert client.wait_final(client.submit(move(4.0)))["status"] == "completed"

    # The X-Reason header says why as well as a body's reason does.
    r = client.post("/queue/maintenance", headers={"X-Reason": "lens swap"})
    assert r.status_code == 200 and r.json()["code"] == "maintenance", r.text
    assert r.json()["maintenance"]["reason"] == "lens swap"
    assert r.json()["maintenance"]["maintenance_at"]  # at once: no draining
    assert client.post("/queue/open").status_code == 200

    r = client.get("/maintenance")
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["success"] is True and record["count"] == 2
    newest, first = record["windows"]
    assert newest["how"] == "maintenance" and newest["reason"] == "lens swap"
    assert first["how"] == "drain" and first["reason"] == REASON
    assert first["opened_by"] == first["closed_by"] == "anonymous"
    assert first["close_reason"] == "arm clean"
    assert first["opened_at"] <= first["maintenance_at"] <= first["closed_at"]
    assert newest["id"] > first["id"] and newest["closed_at"]
    assert client.get("/maintenance", params={"limit": 1}).json()["count"] == 1


# -- 3. maintenance at once --------------------------------------------------------------------
def test_maintenance_lets_the_running_task_end_and_starts_nothing(server: RobotServer,
                                                                   client: Client) -> None:
    sim = server.simulator
    assert sim is not None
    scan = client.submit(slow_scan(8))  # 0.8 s
    nxt = client.submit(move(5.0))
    wait_until(lambda: client.task(scan)["status"] == "running", 5, message="the scan runs")
    r = client.post("/queue/maintenance", {"reason": REASON})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == "maintenance" and body["changed"] is True
    assert body["maintenance"]["maintenance_at"] and body["maintenance"]["reason"] == REASON

    doc = client.wait_final(scan)
    assert doc["status"] == "completed" and doc["result"]["scanned_count"] == 8, doc
    stays(client, nxt, sim, 5.0, 1.0)
    waiting = client.task(nxt)["waiting_for"]
    assert waiting[0]["code"] == "maintenance" and waiting[0]["params"] == {"reason": REASON}
    assert REASON in waiting[0]["message"]
    assert client.status()["queue_mode"] == "maintenance"

    assert client.post("/queue/open").status_code == 200
    assert client.wait_final(nxt)["status"] == "completed"
    assert xs(sim) == [5.0]


def test_maintenance_holds_a_running_sequence_at_its_next_step(server: RobotServer,
                                                               client: Client) -> None:
    sim = server.simulator
    assert sim is not None
    r = client.post("/sequences", {"steps": [slow_scan(8), move(21.0)]})
    assert r.status_code == 202, r.text
    sid, (scan, step) = r.json()["sequence_id"], r.json()["task_ids"]
    wait_until(lambda: client.task(scan)["status"] == "running", 5, message="step 1 runs")
    assert client.post("/queue/maintenance", {"reason": REASON}).status_code == 200
    assert client.wait_final(scan)["status"] == "completed"
    stays(client, step, sim, 21.0, 1.0)
    assert client.task(step)["waiting_for"][0]["code"] == "maintenance"
    assert client.get(f"/sequences/{sid}").json()["status"] not in ("completed", "failed")
    assert client.post("/queue/open").status_code == 200
    assert client.wait_final(step)["status"] == "completed"
    assert xs(sim) == [21.0]


# -- 4. waiting_for ----------------------------------------------------------------------------
def test_waiting_for_names_each_reason_most_fundamental_first(own_sim: RobotSimulator,
                                                              make_server) -> None:
    server = make_server(robot=own_sim.path)
    client = Client(server)
    client.wait_final(client.submit(move(0.5)))

    scan = client.submit(slow_scan(10))  # 1 s: the running task counts as ahead
    wait_until(lambda: client.task(scan)["status"] == "running", 5, message="the scan runs")
    t1, t2 = client.submit(move(1.0)), client.submit(move(2.0))
    first, second = client.task(t1), client.task(t2)
    assert first["waiting_for"] == [{"code": "queue_position", "params": {"ahead": 1},
                                     "message": "1 task(s) ahead"}], first
    assert second["waiting_for"][0]["params"] == {"ahead": 2}, second
    zh = client.get(f"/task/{t2}", headers=ZH).json()["waiting_for"]
    assert zh == [{"code": "queue_position", "params": {"ahead": 2},
                   "message": "前面还有 2 个任务"}], zh
    listed = client.get("/tasks", params={"status": "pending"}).json()["tasks"]
    assert {d["task_id"]: d["waiting_for"] for d in listed} == \
        {t1: first["waiting_for"], t2: second["waiting_for"]}

    assert client.post("/queue/pause", {"reason": "补充试剂"}).status_code == 200
    client.wait_final(scan)
    doc = client.task(t1)
    assert codes(doc) == ["paused"], doc
    assert doc["waiting_for"][0]["params"]["reason"] == "补充试剂"
    assert doc["waiting_for"][0]["message"] == "the queue is paused: 补充试剂"
    assert codes(client.task(t2)) == ["paused", "queue_position"]
    t3 = client.submit(move(3.0, not_before=local(time.time() + 3600)))
    doc = client.task(t3)
    assert codes(doc) == ["paused", "not_before", "queue_position"], doc
    assert doc["waiting_for"][2]["params"] == {"ahead": 2}
    assert 3590 <= doc["waiting_for"][1]["params"]["seconds"] <= 3600

    own_sim.unplug()
    wait_until(lambda: "robot_disconnected" in codes(client.task(t1)), 10,
               message="the link seen down")
    assert codes(client.task(t1)) == ["paused", "robot_disconnected"]
    r = client.post("/queue/maintenance", {"reason": REASON})
    assert r.status_code == 200, r.text
    doc = client.task(t3)
    assert codes(doc) == ["maintenance", "paused", "robot_disconnected", "not_before",
                          "queue_position"], doc
    assert doc["waiting_for"][2]["message"] == "the robot is not connected"
    zh = client.get(f"/task/{t3}", headers=ZH).json()["waiting_for"]
    assert [w["code"] for w in zh] == codes(doc)
    assert [w["message"] for w in zh[:3]] == [f"机器人正在维护：{REASON}", "队列已暂停：补充试剂",
                                              "机器人未连接"]
    assert zh[3]["message"].startswith("不早于") and zh[4]["message"] == "前面还有 2 个任务"
    listed = client.get("/tasks", params={"status": "pending"}, headers=ZH).json()["tasks"]
    assert {d["task_id"]: d["waiting_for"] for d in listed}[t3] == zh

    own_sim.replug()
    wait_until(lambda: "robot_disconnected" not in codes(client.task(t1)), 10,
               message="the link up again")
    assert client.post("/queue/open").status_code == 200
    assert client.post("/queue/resume").status_code == 200
    for task_id in (t1, t2):
        assert client.wait_final(task_id)["status"] == "completed"
    assert codes(client.task(t3)) == ["not_before"]

    # A held sequence holds the robot: the task behind it says which one.
    own_sim.fault_next("PICK")
    r = client.post("/sequences", {"name": "hold", "steps": [
        {"cmd_type": "HOME"}, {"cmd_type": "PICK", "params": {"position": 3}}]})
    assert r.status_code == 202, r.text
    sid = r.json()["sequence_id"]
    wait_until(lambda: client.get(f"/sequences/{sid}").json()["status"] == "held", 10,
               message="the sequence held")
    t4 = client.submit(move(4.0))
    found = codes(client.task(t4))
    assert "sequence_held" in found and in_order(found), found
    held = next(w for w in client.task(t4)["waiting_for"] if w["code"] == "sequence_held")
    assert held["params"] == {"sequence_id": sid} and sid in held["message"]
    zh = client.get(f"/task/{t4}", headers=ZH).json()["waiting_for"]
    assert [w["code"] for w in zh] == found
    assert f"序列 {sid} 占用机器人" in next(w["message"] for w in zh
                                        if w["code"] == "sequence_held")
    assert client.post(f"/sequences/{sid}/recover", {"action": "abort"}).status_code == 200
    assert client.wait_final(t4)["status"] == "completed"
    assert xs(own_sim) == [0.5, 1.0, 2.0, 4.0]


# -- 5. the SSE queue event --------------------------------------------------------------------
def test_queue_event_carries_the_mode(client: Client) -> None:
    reader = SSEReader(client.url)
    try:
        # A task submitted to an idle queue starts next: it waits for nothing.
        task_id = client.submit(move(1.0))
        event = reader.wait_for(lambda e: e.get("event") == "task"
                                and e["data"].get("task_id") == task_id, 5)
        assert event["data"]["status"] == "pending" and event["data"]["waiting_for"] == []
        client.wait_final(task_id)
        assert client.post("/queue/drain", {"reason": REASON}).status_code == 200
        event = reader.wait_for(lambda e: e.get("event") == "queue"
                                and e["data"].get("queue_mode") != "open", 5)
        # An empty queue drains at once: draining, or already maintenance.
        assert event["data"]["queue_mode"] in ("draining", "maintenance"), event
        assert event["data"]["maintenance"]["reason"] == REASON
        assert client.post("/queue/open").status_code == 200
        event = reader.wait_for(lambda e: e.get("event") == "queue"
                                and e["data"].get("queue_mode") == "open", 5)
        assert event["data"]["maintenance"] is None
    finally:
        reader.close()


def test_the_banner_says_the_robot_is_in_maintenance(client: Client, capsys: Any) -> None:
    from console.banner import print_banner

    r = client.post("/queue/maintenance", {"reason": "更换夹爪"})
    assert r.status_code == 200 and r.json()["queue_mode"] == "maintenance"
    capsys.readouterr()
    print_banner(client.server, "zh")
    out = capsys.readouterr().out
    assert "机器人正在维护: 更换夹爪" in out and "/queue/open" in out
    client.post("/queue/open")
    print_banner(client.server, "en")
    assert "maintenance" not in capsys.readouterr().out
