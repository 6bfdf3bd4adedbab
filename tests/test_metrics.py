"""GET /metrics: Prometheus text format, counters that agree with /queue/status."""

from __future__ import annotations

import math

import pytest

from server.metrics import DURATION_BUCKETS, Metrics
from tests.conftest import SCAN

parser = pytest.importorskip("prometheus_client.parser",
                             reason="prometheus_client (requirements-dev.txt) is not installed")


def _has_metrics_route() -> bool:
    from server.api.routes import build_router
    from server.errors import ApiError

    try:
        build_router().match("GET", "/metrics")
    except ApiError:
        return False
    return True


needs_route = pytest.mark.skipif(not _has_metrics_route(),
                                 reason="server/api/routes.py has no GET /metrics yet "
                                        "(the lead's metrics wiring patch is not applied)")


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}"""
    out: dict[str, dict[tuple, float]] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


# -- the registry alone ------------------------------------------------------------------------
def test_render_parses_and_histograms_are_cumulative() -> None:
    m = Metrics()
    for duration in (0.05, 0.3, 0.3, 42.0, 900.0):
        m.observe_task("SCAN_QRCODE", "completed", duration)
    m.observe_task("HOME", "cancelled", None)  # never ran: no duration
    for status in (200, 202, 404, 503, 201):
        m.count_http(status)
    text = m.render({"completed_tasks": 4, "failed_tasks": 1, "cancelled_tasks": 2,
                     "pending_tasks": 3, "running_task": "abc", "paused": True},
                    {"connected": True, "reconnects": 7})
    s = parse(text)
    buckets = {float(dict(k)["le"]): v
               for k, v in s["robot_task_duration_seconds_bucket"].items()}
    assert buckets[0.1] == 1 and buckets[0.5] == 3 and buckets[60] == 4
    assert buckets[600] == 4 and buckets[math.inf] == 5
    assert len(buckets) == len(DURATION_BUCKETS) + 1
    key = (("cmd_type", "SCAN_QRCODE"),)
    assert s["robot_task_duration_seconds_count"][key] == 5
    assert math.isclose(s["robot_task_duration_seconds_sum"][key], 942.65)
    assert (("cmd_type", "HOME"),) not in s["robot_task_duration_seconds_count"]
    assert s["robot_tasks_total"] == {(("status", "completed"),): 4,
                                      (("status", "failed"),): 1,
                                      (("status", "cancelled"),): 2}
    assert s["robot_queue_depth"][()] == 3 and s["robot_task_running"][()] == 1
    assert s["robot_connected"][()] == 1 and s["robot_link_reconnects_total"][()] == 7
    http = {dict(k)["class"]: v for k, v in s["robot_http_requests_total"].items()}
    assert http == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 1}


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.observe_task('odd"name\\with\nnewline', "completed", 1.0)
    s = parse(m.render({}, {}))
    assert (("cmd_type", 'odd"name\\with\nnewline'),) in s["robot_task_duration_seconds_count"]


# -- the route on a real server --------------------------------------------------------------
@needs_route
def test_metrics_match_queue_status(server, client) -> None:
    done = [client.submit() for _ in range(2)]
    for task_id in done:
        assert client.wait_final(task_id)["status"] == "completed"
    client.post("/queue/pause")
    waiting = client.submit()
    assert client.post(f"/task/{waiting}/cancel").status_code == 200
    client.post("/queue/resume")
    server.simulator.set_fault("fail")
    failed = client.submit()
    assert client.wait_final(failed)["status"] == "failed"
    client.post("/queue/pause")
    queued = client.submit()  # stays pending
    assert client.get("/task/nope").status_code == 404

    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    s = parse(r.text)
    status = client.status()
    totals = {dict(k)["status"]: v for k, v in s["robot_tasks_total"].items()}
    assert totals == {"completed": status["completed_tasks"], "failed": status["failed_tasks"],
                      "cancelled": status["cancelled_tasks"]} == {"completed": 2, "failed": 1,
                                                                  "cancelled": 1}
    assert s["robot_queue_depth"][()] == status["pending_tasks"] == 1
    assert status["pending"] == [queued]
    assert s["robot_task_running"][()] == 0
    # Only tasks that ran are timed: 2 completed + 1 failed, not the one cancelled while pending.
    assert s["robot_task_duration_seconds_count"][(("cmd_type", "SCAN_QRCODE"),)] == 3
    robot = client.get("/robot").json()
    assert s["robot_connected"][()] == 1
    assert s["robot_link_reconnects_total"][()] == robot["reconnects"]
    assert s["robot_link_skipped_lines_total"][()] == robot["skipped_lines"]
    http = {dict(k)["class"]: v for k, v in s["robot_http_requests_total"].items()}
    assert http["4xx"] == 1 and http["2xx"] >= 10 and http["5xx"] == 0


@needs_route
def test_metrics_need_the_token(make_server) -> None:
    import requests

    server = make_server(api_token="s3cret")
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 401
    r = requests.get(server.url + "/metrics", headers={"Authorization": "Bearer s3cret"},
                     timeout=10)
    assert r.status_code == 200 and "robot_tasks_total" in r.text


@needs_route
def test_running_gauge_and_a_cancelled_running_task_is_timed(make_server) -> None:
    from tests.conftest import Client, wait_until

    server = make_server(sim_speed=2.0)
    client = Client(server)
    task_id = client.submit(SCAN)
    wait_until(lambda: client.task(task_id)["status"] == "running", 10, message="running")
    s = parse(client.get("/metrics").text)
    assert s["robot_task_running"][()] == 1 and s["robot_queue_depth"][()] == 0
    client.post(f"/task/{task_id}/cancel")
    assert client.wait_final(task_id)["status"] == "cancelled"
    s = parse(client.get("/metrics").text)
    assert s["robot_tasks_total"][(("status", "cancelled"),)] == 1
    assert s["robot_task_duration_seconds_count"][(("cmd_type", "SCAN_QRCODE"),)] == 1
