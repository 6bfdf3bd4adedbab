"""GET /openapi.json: a valid OpenAPI 3.1 document of every route, and the live server
keeps to it under generated input (schemathesis against the simulator robot)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from server.api.openapi import build_openapi
from server.api.routes import build_router
from settings import Settings

HAVE_VALIDATOR = importlib.util.find_spec("openapi_spec_validator") is not None
HAVE_SCHEMATHESIS = importlib.util.find_spec("schemathesis") is not None


@pytest.mark.skipif(not HAVE_VALIDATOR, reason="pip install openapi-spec-validator "
                                                "(requirements-dev.txt)")
def test_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    doc = build_openapi(Settings())
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_route_is_documented_and_nothing_else() -> None:
    routes = {(method.lower(), re.sub(r"<(\w+)>", r"{\1}", regex.pattern[1:-1]
                                      .replace("(?P", "").replace(">[^/]+)", ">")))
              for method, regex, _ in build_router()._routes}
    doc = build_openapi(Settings())
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routes


def test_document_states_this_servers_limits() -> None:
    doc = build_openapi(Settings(max_wait=7.5, max_body=1234))
    for path in ("/task/{task_id}", "/queue/status"):
        wait = next(p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == "wait")
        # Clamped, not refused: no maximum, but the description says where it is.
        assert "maximum" not in wait["schema"] and "7.5 s" in wait["description"]
        reply = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        name = reply["schema"]["$ref"].rsplit("/", 1)[1]
        assert doc["components"]["schemas"][name]["properties"]["timed_out"]["type"] == "boolean"
    assert "1234 bytes" in doc["paths"]["/"]["post"]["requestBody"]["description"]
    dry_run = [p["name"] for p in doc["paths"]["/"]["post"]["parameters"]]
    assert "dry_run" in dry_run and "/validate" in doc["paths"]


def test_served_document_needs_read_and_matches(make_server) -> None:
    server = make_server(api_token="openapi-test-token-1234", max_wait=3.0)
    r = requests.get(server.url + "/openapi.json", timeout=5)
    assert r.status_code == 401  # a GET of the API: the read permission (docs/security.md)
    r = requests.get(server.url + "/openapi.json", timeout=5,
                     headers={"Authorization": "Bearer openapi-test-token-1234"})
    assert r.status_code == 200
    assert r.json() == build_openapi(server.app.settings)


# Loaded by schemathesis (SCHEMATHESIS_HOOKS). Generated Idempotency-Keys repeat (short
# strings are likely), and a key reused with another command is refused by design
# (422 idempotency_key_reused, as the IETF idempotency-key draft says): state no
# schema can express, so that one refusal is not counted as "valid data rejected". So are
# webhook URLs outside --webhook-allow: whether a host resolves there is not a schema's;
# and a not_before more than 366 days ahead (when that is depends on the clock) or on a
# day its month does not have (the pattern does not count days per month), refused on
# POST / (400) and in a sequence's errors (422 sequence_invalid). Drain and maintenance
# take their reason from the X-Reason header when the body has none: a body without one
# is accepted then (docs/queue.md).
HOOKS = """
import schemathesis

NOT_BEFORE = ("not_before_invalid", "not_before_too_far")


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    try:
        body = response.json()
        code = body.get("code")
    except Exception:
        return True
    kind, status = type(failure).__name__, response.status_code
    if kind == "RejectedPositiveData" and (
            status == 422 and code in ("idempotency_key_reused", "webhook_url_invalid",
                                       "webhook_url_refused")
            or status == 400 and code in NOT_BEFORE
            or status == 422 and code == "sequence_invalid"
            and all(e.get("code") in NOT_BEFORE for e in body.get("errors") or [{}])):
        return False
    reason = {k.lower(): v for k, v in (case.headers or {}).items()}.get("x-reason", "")
    return not (kind == "AcceptedNegativeData" and status == 200 and reason.strip()
                and case.path in ("/queue/drain", "/queue/maintenance"))
"""
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance,"
          "negative_data_rejection,positive_data_acceptance")
# Draining or closing the queue makes every later submit a 503 (as it should): those two
# are fuzzed on their own, after the rest.
CLOSING = "^/(queue/(drain|maintenance|open)|maintenance)$"


# Three runs at once, each against a server of its own (generated requests change what a
# server answers later): the same operations, phases, examples and checks as one run
# after another, in about half the time on two cores (the schemathesis process, not the
# server, is the busy one). The fuzzing phase runs apart from the other three; drain and
# maintenance (CLOSING) have their own server, where no other operation comes after them.
RUNS = {"examples-coverage-stateful": ("--exclude-path", "/events", "--exclude-path-regex",
                                       CLOSING, "--phases", "examples,coverage,stateful"),
        "fuzzing": ("--exclude-path", "/events", "--exclude-path-regex", CLOSING,
                    "--phases", "fuzzing"),
        "closing": ("--include-path-regex", CLOSING)}
RUN_TIMEOUT_S = 80.0


def _schemathesis(url: str, token: str, directory: Any, hooks: Any,
                  *select: str) -> subprocess.Popen[str]:
    """One schemathesis run started in `directory`; its output goes to out.txt there."""
    cli = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    directory.mkdir()
    with open(directory / "out.txt", "w", encoding="utf-8") as out:
        return subprocess.Popen(
            [cli, "run", url + "/openapi.json", "--checks", CHECKS, "--mode", "all", *select,
             "--max-examples", "20", "--header", f"Authorization: Bearer {token}",
             "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261128"), "--no-shrink",
             "--request-timeout", "10", "--warnings", "off"],
            cwd=directory, stdout=out, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": str(hooks)})


@pytest.mark.timeout(180)  # three schemathesis runs at once, of at most 80 s each
@pytest.mark.skipif(not HAVE_SCHEMATHESIS, reason="pip install schemathesis "
                                                   "(requirements-dev.txt)")
def test_schemathesis_finds_no_server_error_or_schema_violation(make_server, tmp_path) -> None:
    # Short long-polls keep generated ?wait= requests fast; /events never ends, so a
    # generated request to it would only time out: it is excluded (covered by
    # tests/test_events.py). /robot/stop is kept: it pauses the queue, which only
    # changes later answers in documented ways. No --max-time: with it, fuzzing
    # repeats until the whole budget is spent. --mode all: valid and invalid data,
    # so that negative_data_rejection (the server refuses what the schema forbids)
    # and positive_data_acceptance (it accepts what the schema allows) hold both
    # ways: the document is what a lab's own client can be generated from. With the
    # --api-token admin: on an open server the first generated POST /admin/users would
    # close it, and every later request would be a 401. Drain and maintenance on a
    # server of their own (CLOSING, RUNS).
    token = "schemathesis-token-0123456789"
    hooks = tmp_path / "st_hooks.py"
    hooks.write_text(HOOKS, encoding="utf-8")
    runs: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, select in RUNS.items():
            server = make_server(max_wait=0.5, api_token=token)
            runs[name] = _schemathesis(server.url, token, tmp_path / name, hooks, *select)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for name, proc in runs.items():
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            out = (tmp_path / name / "out.txt").read_text(encoding="utf-8")
            assert proc.returncode == 0, f"{name}:\n{out[-8000:]}"
            assert "generated" in out and " passed" in out, f"{name}:\n{out[-8000:]}"
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- GET /events: each event type and its data, and the live stream keeps to them ----------
def _validator(doc: dict, schema: dict) -> Any:
    from jsonschema import Draft202012Validator

    # The document's components beside the schema: "#/components/schemas/X" resolves.
    return Draft202012Validator({**schema, "components": doc["components"]})


def test_events_are_declared_as_an_event_stream_with_their_types() -> None:
    doc = build_openapi(Settings())
    reply = doc["paths"]["/events"]["get"]["responses"]["200"]
    assert list(reply["content"]) == ["text/event-stream"]
    stream = reply["content"]["text/event-stream"]["schema"]
    assert stream.get("type") != "string"  # issue 29: once a plain string
    assert stream["items"] == {"$ref": "#/components/schemas/Event"}
    schemas = doc["components"]["schemas"]
    mapping = schemas["Event"]["discriminator"]["mapping"]
    assert set(mapping) == {"snapshot", "task", "progress", "queue", "robot", "sequence",
                            "webhook", "reset"}
    for kind, target in mapping.items():
        event = schemas[target.rsplit("/", 1)[1]]
        assert {"$ref": target} in schemas["Event"]["oneOf"]
        assert event["properties"]["event"] == {"const": kind}
        data = event["properties"]["data"]
        assert data["contentMediaType"] == "application/json" and data["contentSchema"]
    assert schemas["EventTask"]["properties"]["data"]["contentSchema"] == {
        "$ref": "#/components/schemas/Task"}
    # The doc's own example is a stream these schemas accept.
    _validator(doc, stream).validate(stream["examples"][0])
    for block in stream["examples"][0]:
        data = schemas[mapping[block["event"]].rsplit("/", 1)[1]]["properties"]["data"]
        _validator(doc, data["contentSchema"]).validate(json.loads(block["data"]))


def test_a_live_stream_keeps_to_the_declared_events(make_server, tmp_path) -> None:
    from robot.sim.simulator import RobotSimulator
    from tests.conftest import Client
    from tests.sse import SSEReader

    sim = RobotSimulator(30.0, link_path=str(tmp_path / "robot"), heartbeat_s=0.05)
    sim.start()
    readers: list[SSEReader] = []
    try:
        server = make_server(robot=sim.path)
        doc = requests.get(server.url + "/openapi.json", timeout=5).json()
        schemas = doc["components"]["schemas"]
        mapping = schemas["Event"]["discriminator"]["mapping"]
        seen: dict[str, int] = {}

        def check(event: dict) -> dict:
            name = mapping[event["event"]].rsplit("/", 1)[1]
            # The block's fields, with data as the JSON text it was on the wire.
            block = {k: (json.dumps(v) if k == "data" else int(v) if k == "retry" else v)
                     for k, v in event.items()}
            _validator(doc, {"$ref": f"#/components/schemas/{name}"}).validate(block)
            _validator(doc, {"$ref": "#/components/schemas/Event"}).validate(block)
            content = schemas[name]["properties"]["data"]["contentSchema"]
            _validator(doc, content).validate(event["data"])
            seen[event["event"]] = seen.get(event["event"], 0) + 1
            return event

        reader = SSEReader(server.url)
        readers.append(reader)
        assert reader.status_line.endswith("200 OK")
        assert "text/event-stream" in reader.headers
        first = check(reader.next_event())
        assert first["event"] == "snapshot" and "id" not in first
        client = Client(server)
        task_id = client.submit({"cmd_type": "SCAN_QRCODE",
                                 "params": {"rack": "A", "positions": [1, 2, 3]}})
        while True:
            event = check(reader.next_event())
            if event["event"] == "task" and event["data"]["status"] == "completed":
                assert event["data"]["task_id"] == task_id
                break
        client.post("/queue/pause")
        check(reader.wait_for(lambda e: check(e)["event"] == "queue"))
        sim.unplug()
        check(reader.wait_for(lambda e: check(e)["event"] == "robot"
                              and e["data"]["event"] == "disconnected"))
        # A Last-Event-ID from long ago: the answer starts with a reset.
        old = SSEReader(server.url, headers={"Last-Event-ID": "1"})
        readers.append(old)
        assert check(old.next_event())["event"] == "snapshot"
        assert check(old.next_event())["event"] == "reset"
        assert {"snapshot", "task", "progress", "queue", "robot", "reset"} <= set(seen)
        # A block that breaks its type's schema is refused: the check can fail.
        from jsonschema import ValidationError

        with pytest.raises(ValidationError):
            _validator(doc, schemas["EventProgress"]["properties"]["data"]["contentSchema"]
                       ).validate({"task_id": task_id})
    finally:
        for reader in readers:
            reader.close()
        sim.stop()


# -- issue 33: the queue's shaping keeps to the document ------------------------------------
def test_shaping_replies_keep_to_the_document(make_server) -> None:
    # Paused first: the tasks stay pending, so waiting_for has reasons to name. Each live
    # reply is checked against the schema the document gives its route.
    server = make_server(name="scanner-2", labels=(("room", "B204"),))
    url = server.url
    doc = requests.get(url + "/openapi.json", timeout=5).json()

    def check(name: str, value: Any) -> Any:
        _validator(doc, {"$ref": f"#/components/schemas/{name}"}).validate(value)
        return value

    requests.post(url + "/queue/pause", json={"reason": "lunch"}, timeout=5)
    scan = {"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": [1]}}
    first = requests.post(url + "/", json=scan, timeout=5).json()["task_id"]
    later = requests.post(url + "/", json={**scan, "not_before": "2099-01-01T00:00:00Z"},
                          timeout=5)
    assert later.status_code == 400 and later.json()["code"] == "not_before_too_far"
    soon = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 3600))
    later_id = requests.post(url + "/", json={**scan, "not_before": soon},
                             timeout=5).json()["task_id"]
    task = check("Task", requests.get(f"{url}/task/{later_id}", timeout=5).json())
    assert task["not_before"] == soon
    codes = [w["code"] for w in task["waiting_for"] if w["code"] != "robot_disconnected"]
    assert codes == ["paused", "not_before", "queue_position"]  # the robot may still connect
    moved = check("TaskMoved", requests.post(f"{url}/task/{later_id}/jump", timeout=5).json())
    assert moved["pending"][:2] == [later_id, first]
    check("TaskMoved", requests.post(f"{url}/task/{later_id}/move", json={"after": first},
                                     timeout=5).json())
    refused = requests.post(f"{url}/task/{first}/move", json={"position": 1, "after": first},
                            timeout=5)
    assert refused.status_code == 400 and refused.json()["code"] == "move_body_invalid"
    check("QueueMode", requests.post(url + "/queue/drain", json={"reason": "calibration"},
                                     timeout=5).json())
    replies = {name: check(name, requests.get(url + path, timeout=5).json())
               for path, name in (("/queue/status", "QueueStatus"), ("/health", "Health"),
                                  ("/robot", "Robot"), ("/maintenance", "MaintenanceList"))}
    health = replies["Health"]
    assert health["queue_mode"] == "draining" and health["maintenance"]["reason"] == "calibration"
    assert (health["name"], health["labels"]) == ("scanner-2", {"room": "B204"})
    assert replies["MaintenanceList"]["windows"][0]["how"] == "drain"
    closed = requests.post(url + "/", json=scan, timeout=5)
    assert closed.status_code == 503 and closed.json()["code"] == "draining"
    assert "503" in doc["paths"]["/"]["post"]["responses"]
    opened = check("QueueMode", requests.post(url + "/queue/open", timeout=5).json())
    assert opened["code"] == "open" and opened["maintenance"] is None
