"""Sequences end to end (docs/sequences.md), the API's rules: validation all or nothing
with its limits and ``?dry_run=1``, Idempotency-Key, each step an ordinary task, the
list and /queue/status. How sequences run is tests/test_sequences.py."""

from __future__ import annotations

from typing import Any

from tests.conftest import Client, wait_until
from tests.test_sequences import HOME, PICK, PLACE, move, sequence, submit, wait_seq

GATE = {"cmd_type": "CONFIRM", "params": {"message": "Load rack B, then confirm"}}


def counts(client: Client) -> tuple[int, int, int]:
    """What is queued: queue size, tasks in /tasks, sequences in /sequences."""
    return (client.status()["queue_size"], client.get("/tasks").json()["total"],
            len(client.get("/sequences", params={"limit": 500}).json()["sequences"]))


def refused(client: Client, body: Any, **kw: Any) -> list[dict[str, Any]]:
    """POST /sequences expecting 422 sequence_invalid: its errors."""
    r = client.post("/sequences", body, **kw)
    assert r.status_code == 422, r.text
    doc = r.json()
    assert doc["success"] is False and doc["code"] == "sequence_invalid" and doc["message"]
    assert all(e["code"] and e["message"] for e in doc["errors"])
    return doc["errors"]


# -- 5. validation ---------------------------------------------------------------------------------
def test_bad_steps_are_all_named_and_nothing_is_queued(server, client) -> None:
    client.wait_final(client.submit(HOME))
    before = counts(client)
    body = {"name": "bad", "steps": [
        HOME,                                                    # 1: fine
        {"cmd_type": "DANCE"},                                   # 2: unknown command
        move(5000.0),                                            # 3: out of range
        {**HOME, "retry": 11},                                   # 4: retry over 10
        {"cmd_type": "CONFIRM", "params": {}},                   # 5: no message
        {**HOME, "on_error": "explode"},                         # 6: bad rule
        {**GATE, "retry": 1},                                    # 7: no retry on CONFIRM
        {**HOME, "colour": "red"},                               # 8: unknown key
        PICK]}                                                   # 9: fine
    errors = refused(client, body)
    assert sorted({e["step"] for e in errors}) == [2, 3, 4, 5, 6, 7, 8], errors
    by_step = {e["step"]: e for e in errors}
    assert by_step[2]["code"] == "unknown_command" and by_step[3]["code"] == "out_of_range"
    assert by_step[4]["field"] == "retry" and by_step[6]["field"] == "on_error"
    assert by_step[5]["field"] == "params.message"
    assert by_step[7]["code"] == "confirm_no_retry"
    assert counts(client) == before  # nothing queued
    r = client.post("/", GATE)  # CONFIRM only inside a sequence
    assert r.status_code in (400, 422), r.text
    assert counts(client) == before


def test_a_step_parameter_error_names_its_field_as_post_does(server, client) -> None:
    bad = move(5000.0)
    single = client.post("/", bad)
    assert single.status_code == 422 and single.json()["field"] == "params.x"
    errors = refused(client, {"steps": [HOME, bad]})
    assert [(e["step"], e["code"]) for e in errors] == [(2, "out_of_range")]
    assert errors[0]["field"] == single.json()["field"], errors


def test_the_limits(server, client) -> None:
    before = counts(client)
    cases: list[tuple[Any, str]] = [
        ({"steps": []}, "steps"),
        ({"steps": [{"cmd_type": "PING"}] * 1001}, "steps"),
        ({"steps": [HOME], "on_error": "sometimes"}, "on_error"),
        ({"steps": [HOME], "name": "n" * 201}, "name"),
        ({"steps": [HOME], "external_id": ""}, "external_id"),
    ]
    for body, field in cases:
        errors = refused(client, body)
        assert [(e["step"], e.get("field")) for e in errors] == [(None, field)], errors
    assert refused(client, {"name": 5, "steps": []})[0]["step"] is None  # both at once
    assert len(refused(client, {"name": 5, "steps": []})) == 2
    errors = refused(client, {"steps": [{**HOME, "retry": 11}, {**HOME, "retry": -1},
                                        {**HOME, "retry": True}, {**HOME, "label": "l" * 201},
                                        {**GATE, "params": {"message": "m" * 501}},
                                        {**GATE, "params": {"message": "ok", "timeout_s": 0}}]})
    assert [e["step"] for e in errors] == [1, 2, 3, 4, 5, 6], errors
    r = client.post("/sequences", [HOME])  # not an object: as on POST /
    assert r.status_code == 400 and r.json()["code"] == "not_json_object"
    ok = client.post("/sequences?dry_run=1", {"steps": [{"cmd_type": "PING"}] * 1000,
                                              "on_error": "continue", "name": "n" * 200})
    assert ok.status_code == 200 and len(ok.json()["plan"]["steps"]) == 1000, ok.text
    assert counts(client) == before


def test_dry_run_returns_the_plan_with_estimates_and_queues_nothing(server, client) -> None:
    body = {"name": "plan", "external_id": "LIMS-9", "on_error": "abort",
            "steps": [HOME, {**PICK, "label": "pick 3", "retry": 2, "on_error": "continue"}]}
    before = counts(client)
    r = client.post("/sequences", body, params={"dry_run": "1"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["success"] is True and doc["code"] == "sequence_valid" and doc["message"]
    plan = doc["plan"]
    assert (plan["name"], plan["external_id"], plan["on_error"]) == ("plan", "LIMS-9", "abort")
    assert [(s["step"], s["cmd_type"], s["label"], s["retry"], s["on_error"])
            for s in plan["steps"]] == [(1, "HOME", None, 0, None),
                                        (2, "PICK", "pick 3", 2, "continue")]
    assert plan["steps"][1]["params"] == {"position": 3}
    assert [s["estimated_s"] for s in plan["steps"]] == [None, None]  # no history yet
    assert plan["estimated_s"] is None
    assert counts(client) == before

    client.wait_final(client.submit(HOME))  # HOME now has a completed run
    plan = client.post("/sequences?dry_run=1", body).json()["plan"]
    home = plan["steps"][0]["estimated_s"]
    assert isinstance(home, (int, float)) and home >= 0
    assert plan["steps"][1]["estimated_s"] is None and plan["estimated_s"] is None
    plan = client.post("/sequences?dry_run=1", {"steps": [HOME, HOME, GATE]}).json()["plan"]
    assert plan["steps"][2]["estimated_s"] is None and plan["estimated_s"] is None  # CONFIRM
    plan = client.post("/sequences?dry_run=1", {"steps": [HOME, HOME]}).json()["plan"]
    assert plan["estimated_s"] is not None
    assert abs(plan["estimated_s"] - 2 * home) < 0.01
    assert counts(client)[1:] == (before[1] + 1, before[2])


def test_a_sequence_counts_each_step_against_max_queue(make_server) -> None:
    client = Client(make_server(max_queue=3))
    r = client.post("/sequences", {"steps": [HOME, HOME, HOME, HOME]})
    assert r.status_code == 503 and r.json()["code"] == "queue_full", r.text
    assert counts(client) == (0, 0, 0)


# -- 6. Idempotency-Key -------------------------------------------------------------------------
def test_idempotency_key_replays_and_refuses_another_body(server, client) -> None:
    body = {"name": "once", "steps": [GATE, HOME]}  # waits at its CONFIRM: still running
    key = {"Idempotency-Key": "lims-4711-run-1"}
    r = client.post("/sequences", body, headers=key)
    assert r.status_code == 202 and "Idempotent-Replayed" not in r.headers, r.text
    first = r.json()
    assert r.headers["Location"] == f"/sequences/{first['sequence_id']}"
    assert first["success"] is True and first["code"] == "queued" and first["message"]
    assert first["status"] == "pending" and first["queue_position"] == 1
    assert first["queue_size"] == 2 and len(set(first["task_ids"])) == 2
    wait_until(lambda: sequence(client, first["sequence_id"])["confirm"], 10, message="CONFIRM")
    before = counts(client)
    r = client.post("/sequences", body, headers=key)
    assert r.status_code == 202 and r.headers.get("Idempotent-Replayed") == "true", r.text
    again = r.json()
    assert again["code"] == "idempotent_replay"
    assert again["sequence_id"] == first["sequence_id"]
    assert again["task_ids"] == first["task_ids"]
    assert counts(client) == before  # nothing new

    other = client.post("/sequences", {**body, "name": "twice"}, headers=key)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused", \
        other.text
    assert counts(client) == before
    fresh = client.post("/sequences", body)  # no key: a new sequence
    assert fresh.status_code == 202 and "Idempotent-Replayed" not in fresh.headers
    assert fresh.json()["sequence_id"] != first["sequence_id"]
    assert counts(client)[2] == before[2] + 1


# -- 7. each step is an ordinary task ----------------------------------------------------------
def test_each_step_is_a_task_that_cannot_be_cancelled_or_retried_alone(server, client) -> None:
    server.simulator.fault_next("HOME")
    reply = submit(client, {"steps": [HOME, PICK, PLACE]})
    sid, ids = reply["sequence_id"], reply["task_ids"]
    assert wait_seq(client, sid, "held", "completed")["status"] == "held"
    for k, task_id in enumerate(ids, start=1):
        task = client.task(task_id)
        assert task["sequence_id"] == sid and task["step"] == k and "fixit" not in task
    assert task["status"] == "pending" and client.task(ids[0])["status"] == "failed"
    listed = client.get("/tasks", params={"sequence_id": sid}).json()
    assert sorted(t["task_id"] for t in listed["tasks"]) == sorted(ids)
    assert listed["total"] == 3
    lone = client.submit(HOME)  # not in the list of another sequence's tasks
    assert lone not in [t["task_id"] for t in
                        client.get("/tasks", params={"sequence_id": sid}).json()["tasks"]]

    attempts = [("DELETE", f"/task/{ids[1]}"), ("POST", f"/task/{ids[1]}/cancel"),
                ("POST", f"/task/{ids[0]}/retry"), ("DELETE", f"/task/{ids[0]}"),
                ("POST", f"/task/{ids[0]}/cancel")]
    for method, path in attempts:
        r = client.session.request(method, client.url + path, timeout=10)
        assert r.status_code == 409, (method, path, r.text)
        assert r.json()["code"] == "task_in_sequence" and r.json()["sequence_id"] == sid
    assert client.task(ids[1])["status"] == "pending"
    assert client.get("/tasks", params={"sequence_id": sid}).json()["total"] == 3
    r = client.post(f"/sequences/{sid}/recover", {"action": "abort"})
    assert r.status_code == 200
    assert client.wait_final(lone)["status"] == "completed"


# -- 8. the list and /queue/status ----------------------------------------------------------------
def test_list_newest_first_with_filter_and_cursor(server, client) -> None:
    done = [submit(client, {"name": f"s{k}", "steps": [HOME]})["sequence_id"] for k in range(3)]
    for sid in done:
        assert wait_seq(client, sid, "completed", "failed", "held")["status"] == "completed"
    waiting = submit(client, {"name": "gate", "steps": [GATE, HOME]})["sequence_id"]
    wait_until(lambda: client.status()["active_sequence"], 10, message="active_sequence")
    assert client.status()["active_sequence"] == {"sequence_id": waiting, "status": "running",
                                                  "current_step": 1}
    reply = submit(client, {"steps": [PICK]})
    pending = reply["sequence_id"]
    assert reply["queue_position"] == 2  # behind the running one's HOME

    everything = client.get("/sequences").json()
    assert [s["sequence_id"] for s in everything["sequences"]] == [pending, waiting,
                                                                   *done[::-1]]
    assert everything["count"] == 5 and everything["next_cursor"] is None
    first = everything["sequences"][1]
    assert "steps" not in first and "fixits" not in first
    assert first["status"] == "running" and first["name"] == "gate"
    assert first["progress"] == {"steps_done": 0, "steps_total": 2, "percent": 0.0}

    by_status = {st: [s["sequence_id"] for s in
                      client.get("/sequences", params={"status": st}).json()["sequences"]]
                 for st in ("completed", "running", "pending", "held")}
    assert by_status == {"completed": done[::-1], "running": [waiting], "pending": [pending],
                         "held": []}
    assert client.get("/sequences", params={"status": "odd"}).status_code == 400

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/sequences", params=params).json()
        assert page["limit"] == 2 and page["count"] == len(page["sequences"]) <= 2
        seen += [s["sequence_id"] for s in page["sequences"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [pending, waiting, *done[::-1]]
    assert client.get("/sequences", params={"cursor": "x"}).status_code == 400

    assert client.post(f"/sequences/{waiting}/confirm").status_code == 200
    assert wait_seq(client, pending, "completed", "failed", "held")["status"] == "completed"
    assert wait_seq(client, waiting, "completed")["end_time"] is not None
    assert client.status()["active_sequence"] is None


def test_sync_mode_answers_a_sequence_at_once_and_runs_it(make_server) -> None:
    client = Client(make_server(mode="sync"))
    r = client.post("/sequences", {"steps": [HOME, HOME]})
    assert r.status_code == 202 and r.json()["status"] == "pending", r.text
    done = wait_seq(client, r.json()["sequence_id"], "completed", "failed", "held")
    assert done["status"] == "completed"
