"""Requests/s and latency of the real server next to the reference, same run.

Cases (16 keep-alive clients, closed loop, medians of --reps runs of --duration s;
reference and server alternate within each repetition):
* GET /task/<id> of a finished task;
* POST / with the queue paused (the row is committed before the 202);
* GET /queue/status;
* GET /task/<id> and POST / again on a second server started with --log-level WARNING:
  the log's cost, as INFO vs WARNING (same run, alternating with the others).

Run: .venv/bin/python bench/http_throughput.py [--reps 3] [--duration 4]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    MOVE,
    Load,
    ReferenceServer,
    Row,
    ServerProcess,
    fmt,
    http_request,
    median,
    print_table,
    run_load,
    temp_dir,
    verdict,
)


def finished_task(port: int) -> str:
    status, doc = http_request(port, "POST", "/", MOVE)
    assert status == 202, doc
    task_id = doc["task_id"]
    status, doc = http_request(port, "GET", f"/task/{task_id}?wait=10")
    assert doc["status"] == "completed", doc
    return task_id


CpuPerRequest = dict[tuple[str, str], list[float]]  # (case, server) -> µs per request


def measure(reps: int, duration: float,
            clients: int = 16) -> tuple[dict[str, dict[str, list[Load]]], CpuPerRequest]:
    results: dict[str, dict[str, list[Load]]] = {}
    cpu_us: CpuPerRequest = {}
    with temp_dir() as tmp, ReferenceServer() as ref, \
            ServerProcess(os.path.join(tmp, "tasks.db"),
                          log_file=os.path.join(tmp, "server.log")) as srv, \
            ServerProcess(os.path.join(tmp, "quiet.db"), log_file=os.path.join(tmp, "quiet.log"),
                          log_level="WARNING") as quiet:
        task_id = finished_task(srv.port)
        quiet_id = finished_task(quiet.port)
        cases = [("GET /task/<id>", "GET", f"/task/{task_id}", None),
                 ("POST / (paused)", "POST", "/", MOVE),
                 ("GET /queue/status", "GET", "/queue/status", None)]
        http_request(srv.port, "POST", "/queue/pause")
        http_request(quiet.port, "POST", "/queue/pause")
        for rep in range(reps):
            for name, method, path, body in cases:
                per = results.setdefault(name, {"server": [], "reference": []})
                order = [("reference", ref.port, path), ("server", srv.port, path)]
                # The WARNING server gets the submits too, so both hold the same backlog
                # when their GETs are compared.
                if name in ("GET /task/<id>", "POST / (paused)"):
                    per.setdefault("warning", [])
                    order.append(("warning", quiet.port, path.replace(task_id, quiet_id)))
                if rep % 2:
                    order.reverse()
                for who, port, target in order:
                    proc = {"server": srv, "warning": quiet}.get(who)
                    cpu = proc.cpu_seconds() if proc else 0.0
                    load = run_load(port, target, method=method, body=body,
                                    connections=clients, duration=duration, tmp=tmp)
                    if proc:  # CPU per request: steadier than req/s on a noisy machine
                        cpu_us.setdefault((name, who), []).append(
                            (proc.cpu_seconds() - cpu) * 1e6 / max(load.requests, 1))
                    per[who].append(load)
                    print(f"  rep {rep + 1} {name:<20} {who:<9} {load.rps:8.0f} req/s  "
                          f"p50 {load.p50:6.2f} ms  p99 {load.p99:7.2f} ms  "
                          f"errors {load.errors}", file=sys.stderr, flush=True)
        _, status = http_request(srv.port, "GET", "/queue/status")
        print(f"  pending tasks after the POST runs: {status['pending_tasks']}",
              file=sys.stderr)
    return results, cpu_us


TARGETS = {  # name: (min ratio: issue 18's targets, max p99 ms: the first round's)
    "GET /task/<id>": (0.65, 10.0),
    "POST / (paused)": (0.3, 20.0),
    "GET /queue/status": (0.65, None),
}


def rows(results: dict[str, dict[str, list[Load]]], cpu_us: CpuPerRequest) -> list[Row]:
    out = []
    for name, per in results.items():
        srv_rps = median([x.rps for x in per["server"]])
        ref_rps = median([x.rps for x in per["reference"]])
        srv_p99 = median([x.p99 for x in per["server"]])
        ref_p99 = median([x.p99 for x in per["reference"]])
        errors = sum(x.errors for x in per["server"])
        ratio_min, p99_max = TARGETS[name]
        ratio = srv_rps / ref_rps
        out.append(Row(f"{name}, 16 clients: req/s", fmt(srv_rps), fmt(ref_rps),
                       f"{ratio:.2f}x", f">= {ratio_min}x", verdict(ratio >= ratio_min)))
        out.append(Row(f"{name}: p50 / p99 ms",
                       f"{fmt(median([x.p50 for x in per['server']]), 2)} / {fmt(srv_p99)}",
                       f"{fmt(median([x.p50 for x in per['reference']]), 2)} / {fmt(ref_p99)}",
                       "", f"p99 <= {p99_max:g} ms" if p99_max else "",
                       verdict(srv_p99 <= p99_max) if p99_max else "info"))
        if errors:
            out.append(Row(f"{name}: errors (socket or non-2xx)", str(errors), verdict="info"))
        if "warning" in per:
            # Paired: each repetition's two runs are back to back, so the machine's slow
            # drifts cancel out of their ratio; the median of those ratios is the figure.
            quiet_rps = median([x.rps for x in per["warning"]])
            apart = median([a.rps / b.rps for a, b in zip(per["server"], per["warning"],
                                                          strict=True)])
            gated = name == "GET /task/<id>"
            out.append(Row(f"{name} at INFO vs WARNING: req/s (median of paired ratios)",
                           fmt(srv_rps), fmt(quiet_rps), f"{apart:.2f}x",
                           "<= 10 % apart" if gated else "",
                           verdict(abs(1 - apart) <= 0.10) if gated else "info"))
            info_cpu = median(cpu_us.get((name, "server"), [0.0]))
            quiet_cpu = median(cpu_us.get((name, "warning"), [0.0]))
            if info_cpu and quiet_cpu:
                out.append(Row(f"{name} at INFO vs WARNING: server CPU µs per request",
                               fmt(info_cpu), fmt(quiet_cpu), f"{info_cpu / quiet_cpu:.2f}x",
                               "", "info"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0)
    args = p.parse_args()
    print_table("HTTP throughput (server vs reference)", rows(*measure(args.reps, args.duration)))


if __name__ == "__main__":
    main()
