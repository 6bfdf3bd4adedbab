"""Soak, crash mode (bench/soak.py --mode crash): retrying clients against a server that is
kill -9'd again and again.

An in-process simulator on a pty, `main.py serve --auto-resume` on it, the clients of
soaks.clients. The server is killed at random moments and restarted on the same DB and
port. At the end: lost, duplicated, physical re-runs, FIFO violations (docs/durability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from collections import Counter
from typing import Any

import requests
from common import Row, temp_dir

from soaks.clients import Ack, Client, list_tasks, wait_drained
from soaks.harness import (
    SOAK_TIMEOUT,
    MainServer,
    free_port,
    ident,
    keep_logs,
    log,
    params_for,
    run_bounded,
    start_sim,
)


def inversions(values: list[int]) -> int:
    """Pairs i < j with values[i] > values[j] (Fenwick tree, values distinct >= 0)."""
    size = max(values, default=0) + 2
    tree = [0] * size
    count = 0
    for seen, v in enumerate(values):
        i, below = v + 1, 0
        while i > 0:
            below += tree[i]
            i -= i & -i
        count += seen - below
        i = v + 1
        while i < size:
            tree[i] += 1
            i += i & -i
    return count


def analyse(acks: list[Ack], tasks: list[dict[str, Any]], lookups: dict[str, int],
            robot: list[dict[str, Any]], replay_mismatch: int) -> dict[str, Any]:
    by_seq = list(reversed(tasks))  # the listing is newest first: reversed is seq order
    seq = {t["task_id"]: i for i, t in enumerate(by_seq)}
    acked = {a.task_id for a in acks}
    lost = sorted(t for t in acked if t not in seq or lookups.get(t) == 404)
    task_of: dict[tuple[float, ...], list[str]] = {}
    for t in by_seq:
        task_of.setdefault(ident(t.get("params")) or (), []).append(t["task_id"])
    keys: dict[str, set[str]] = {}
    for a in acks:
        keys.setdefault(a.key, set()).add(a.task_id)
    dup_params = sum(1 for ids in task_of.values() if len(ids) > 1)
    dup_keys = sum(1 for ids in keys.values() if len(ids) > 1)
    moves = [ident(c.get("params")) for c in robot if c.get("cmd") == "MOVE_TO"]
    sent = Counter(moves)
    reruns = sum(n - 1 for n in sent.values() if n > 1)
    others = Counter(c.get("cmd") for c in robot if c.get("cmd") not in ("MOVE_TO", "PING",
                                                                          "STOP"))
    orphans = sum(1 for m in sent if m not in task_of)
    first_order: list[int] = []
    placed: set[tuple[float, ...] | None] = set()
    for m in moves:
        if m in task_of and m not in placed:
            placed.add(m)
            first_order.append(seq[task_of[m][0]])
    per_client = 0
    by_client: dict[int, list[Ack]] = {}
    for a in acks:
        by_client.setdefault(a.client, []).append(a)
    for mine in by_client.values():
        order = [seq.get(a.task_id, -1) for a in sorted(mine, key=lambda a: a.k)]
        per_client += sum(1 for p, q in zip(order, order[1:], strict=False) if q <= p)
    statuses: Counter[str] = Counter()
    odd_completed = interrupted_on_robot = 0
    for t in by_seq:
        code = (t.get("result") or {}).get("code")
        statuses[t["status"] + (f"({code})" if code and t["status"] != "completed" else "")] += 1
        runs = sent.get(ident(t.get("params")), 0)
        odd_completed += t["status"] == "completed" and runs != 1
        interrupted_on_robot += code == "interrupted" and runs > 0
    return {
        "acknowledged": len(acks), "acknowledged_task_ids": len(acked),
        "acked_after_retry": sum(1 for a in acks if a.attempts > 1),
        "replayed_on_retry": sum(1 for a in acks if a.replayed),
        "tasks_in_store": len(tasks), "unacknowledged_tasks": len(set(seq) - acked),
        "lost": len(lost), "lost_ids": lost[:20],
        "duplicated": dup_params + dup_keys + replay_mismatch,
        "duplicated_params": dup_params, "keys_with_two_ids": dup_keys,
        "replay_mismatch": replay_mismatch, "physical_reruns": reruns,
        "fifo_violations": inversions(first_order), "client_order_violations": per_client,
        "robot_moves": len(moves), "robot_other_commands": dict(others),
        "orphan_robot_moves": orphans, "completed_not_run_once": odd_completed,
        "statuses": dict(statuses), "interrupted_on_robot": interrupted_on_robot,
    }


def run_crash(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    rng = random.Random(args.seed)
    t_start = time.monotonic()
    figures: dict[str, Any] = {"mode": "crash", "seed": args.seed, "clients": args.clients}
    with temp_dir() as tmp:
        sim = start_sim(tmp, args.speed)
        server = MainServer(["--mode", "queue", "--robot", sim.path, "--db",
                             os.path.join(tmp, "tasks.db"), "--auto-resume",
                             "--log-level", "WARNING"], free_port(),
                            os.path.join(tmp, "server.out"))
        stop = threading.Event()
        clients = [Client(i, server.url, f"{args.seed}", stop, random.Random(rng.random()),
                          args.think, args.give_up) for i in range(args.clients)]
        restarts: list[float] = []
        acks: list[Ack] = []
        tasks: list[dict[str, Any]] = []
        lookups: dict[str, int] = {}
        robot: list[dict[str, Any]] = []
        replay_mismatch, alive = 0, 0
        queue: dict[str, Any] = {"drained": False}
        t_kills = t_drained = time.monotonic()
        try:
            server.start()
            server.wait_health()
            for c in clients:
                c.start()
            phase_end = time.monotonic() + args.duration
            for cycle in range(1, args.cycles + 1):
                wait = rng.uniform(*args.interval)
                if time.monotonic() + wait > phase_end:
                    log(f"--duration {args.duration:g} s reached after {cycle - 1} kills")
                    break
                time.sleep(wait)
                server.kill9()
                server.start()
                restarts.append(server.wait_health())
                acked = sum(len(c.acks) for c in clients)
                log(f"kill {cycle}/{args.cycles} after {wait:.2f} s; up again in "
                    f"{restarts[-1]:.2f} s; {acked} acknowledged so far")
            t_kills = time.monotonic()
            stop.set()
            for c in clients:
                c.join(args.give_up + 15)
            alive = sum(1 for c in clients if c.is_alive())
            acks = [a for c in clients for a in c.acks]
            session = requests.Session()
            # Every key once more: the same task must come back (keys survive restarts).
            replay_mismatch = 0
            for a in acks:
                r = session.post(server.url + "/", json={"cmd_type": "MOVE_TO", "params":
                                 params_for(a.client, a.k)},
                                 headers={"Idempotency-Key": a.key}, timeout=SOAK_TIMEOUT)
                if r.status_code != 202 or r.json().get("task_id") != a.task_id:
                    replay_mismatch += 1
            queue = wait_drained(session, server.url, args.drain_timeout)
            t_drained = time.monotonic()
            tasks = list_tasks(session, server.url, time.monotonic() + 60)
            lookups = {a.task_id: session.get(f"{server.url}/task/{a.task_id}",
                                              timeout=SOAK_TIMEOUT).status_code for a in acks}
            robot = sim.commands()
        except (requests.RequestException, ValueError, KeyError, RuntimeError) as exc:
            figures["error"] = f"{type(exc).__name__}: {exc}"
            log(f"soak aborted: {figures['error']}")
            acks = acks or [a for c in clients for a in c.acks]
        finally:
            stop.set()
            server.kill9()
            sim_stopped = run_bounded(sim.stop, 15)
            keep_logs(tmp, args.keep_logs, "crash")
    figures.update(analyse(acks, tasks, lookups, robot, replay_mismatch))
    figures.update({
        "restarts": len(restarts), "restart_s_max": max(restarts, default=0.0),
        "restart_s_mean": sum(restarts) / len(restarts) if restarts else 0.0,
        "client_retries": sum(c.retries for c in clients),
        "gave_up": sum(len(c.gave_up) for c in clients),
        "refused": dict(sum((c.refused for c in clients), Counter())),
        "clients_stuck": alive, "drained": queue["drained"], "paused_at_end": queue.get("paused"),
        "kill_phase_s": t_kills - t_start, "drain_s": t_drained - t_kills,
        "wall_s": time.monotonic() - t_start, "sim_stopped": sim_stopped,
    })
    ok = all(figures[k] == 0 for k in ("lost", "duplicated", "physical_reruns",
                                       "fifo_violations")) and figures["drained"]
    return figures, ok and "error" not in figures


def crash_rows(f: dict[str, Any]) -> list[Row]:
    def row(what: str, key: str, target: str = "", zero: bool = False) -> Row:
        value = f[key]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        return Row(what, shown, target=target,
                   verdict=("met" if value == 0 else "MISSED") if zero else "info")
    rows = [
        row("acknowledged submits (202)", "acknowledged"),
        row("unique task_ids acknowledged", "acknowledged_task_ids"),
        row("acknowledged only after a retry", "acked_after_retry"),
        row("... of which replays (first attempt was committed)", "replayed_on_retry"),
        row("client retries (conn. error, timeout, 503)", "client_retries"),
        Row("submits given up / refused (not 202, not 503)",
            f"{f['gave_up']} / {sum(f['refused'].values())} {json.dumps(f['refused'])}",
            verdict="info"),
        row("tasks in the store", "tasks_in_store"),
        row("tasks in the store no client got a 202 for", "unacknowledged_tasks"),
        row("lost (acknowledged, not in store or 404)", "lost", "0", True),
        row("duplicated (params twice, key->2 ids, replay differs)", "duplicated", "0", True),
        row("physical re-runs (robot got a request twice)", "physical_reruns", "0", True),
        row("FIFO violations (pairs run out of seq order)", "fifo_violations", "0", True),
        row("a client's later submit got an earlier seq", "client_order_violations", "0", True),
        row("completed but not run exactly once", "completed_not_run_once", "0", True),
        row("robot MOVE_TOs of no task", "orphan_robot_moves", "0", True),
        row("robot MOVE_TOs received", "robot_moves"),
        Row("statuses", ", ".join(f"{k} {v}" for k, v in sorted(f["statuses"].items())),
            verdict="info"),
        row("interrupted tasks the robot had received", "interrupted_on_robot"),
        row("restarts (kill -9 + start)", "restarts"),
        row("restart to /health, mean s", "restart_s_mean"),
        row("restart to /health, max s", "restart_s_max"),
        Row("queue drained at the end", str(f["drained"]), target="True",
            verdict="met" if f["drained"] else "MISSED"),
        row("kill phase s", "kill_phase_s"),
        row("drain s", "drain_s"),
        row("wall s", "wall_s"),
    ]
    if "error" in f:
        rows.append(Row("error", f["error"], verdict="MISSED"))
    return rows
