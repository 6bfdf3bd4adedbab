"""Soak test: retrying clients against a server that is kill -9'd again and again
(`--mode crash`), or a server facing a misbehaving robot (`--mode hostile`).

crash: an in-process simulator on a pty, `main.py serve --auto-resume` on it, N client
threads submitting MOVE_TOs whose params are unique per logical request, each with its own
Idempotency-Key and retried with the same key until 202. The server is killed at random
moments and restarted on the same DB and port. At the end: lost, duplicated, physical
re-runs, FIFO violations (exit 1 if any is not 0).
hostile: one server, the simulator in fault mode flood / noise / deep_result for a few
tasks, then one healthy task; reads must stay 200 and the healthy task must complete.
mixup: kill -9 cycles against a text-protocol robot still working when the server comes
back, restarts resumed at once; no scan may complete with another rack's bottles
(bench/soak_mixup.py).

Run: .venv/bin/python bench/soak.py [--quick] [--mode crash|hostile|mixup] [--json]
(docs/durability.md)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    SOAK_TIMEOUT,
    MainServer,
    Row,
    free_port,
    ident,
    keep_logs,
    log,
    params_for,
    print_table,
    run_bounded,
    start_sim,
    temp_dir,
)
from soak_hostile import HOSTILE, hostile_rows, run_hostile  # noqa: E402
from soak_mixup import mixup_rows, run_mixup  # noqa: E402


# -- crash mode ------------------------------------------------------------------------------
@dataclass
class Ack:
    key: str
    client: int
    k: int
    task_id: str
    attempts: int
    replayed: bool  # Idempotent-Replayed: an earlier attempt had been committed


class Client(threading.Thread):
    """Submits a stream of unique MOVE_TOs; each is retried with its key until 202."""

    def __init__(self, idx: int, url: str, run_id: str, stop: threading.Event,
                 rng: random.Random, think: tuple[float, float], give_up: float) -> None:
        super().__init__(name=f"soak-client-{idx}", daemon=True)
        self.idx, self.url, self.run_id, self.stop = idx, url, run_id, stop
        self.rng, self.think, self.give_up = rng, think, give_up
        self.acks: list[Ack] = []
        self.gave_up: list[str] = []
        self.refused: Counter[str] = Counter()  # final answers other than 202
        self.retries = 0

    def run(self) -> None:
        session = requests.Session()
        k = 0
        while not self.stop.is_set():
            self.submit(session, k)
            k += 1
            self.stop.wait(self.rng.uniform(*self.think))

    def submit(self, session: requests.Session, k: int) -> None:
        key = f"soak-{self.run_id}-{self.idx}-{k}"
        body = {"cmd_type": "MOVE_TO", "params": params_for(self.idx, k)}
        deadline = time.monotonic() + self.give_up
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            try:
                r = session.post(self.url + "/", json=body, headers={"Idempotency-Key": key},
                                 timeout=SOAK_TIMEOUT)
            except requests.RequestException:
                r = None
            if r is not None and r.status_code == 202:
                self.acks.append(Ack(key, self.idx, k, r.json()["task_id"], attempts,
                                     r.headers.get("Idempotent-Replayed") == "true"))
                return
            if r is not None and r.status_code != 503:
                try:
                    code = r.json().get("code", "")
                except ValueError:
                    code = ""
                self.refused[f"{r.status_code} {code}"] += 1
                return
            self.retries += 1
            time.sleep(0.05)
        self.gave_up.append(key)


def list_tasks(session: requests.Session, url: str, deadline: float) -> list[dict[str, Any]]:
    """Every task, newest first, paged by cursor."""
    tasks: list[dict[str, Any]] = []
    cursor = None
    while time.monotonic() < deadline:
        q = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = session.get(url + "/tasks", params=q, timeout=SOAK_TIMEOUT).json()
        tasks += page["tasks"]
        cursor = page.get("next_cursor")
        if not cursor:
            return tasks
    raise RuntimeError("GET /tasks paging did not finish in time")


def wait_drained(session: requests.Session, url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status = session.get(url + "/queue/status", timeout=SOAK_TIMEOUT).json()
        except requests.RequestException:
            time.sleep(0.2)
            continue
        if status.get("pending_tasks") == 0 and not status.get("running_task"):
            status["drained"] = True
            return status
        time.sleep(0.2)
    status["drained"] = False
    return status


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


# -- command line ----------------------------------------------------------------------------
def _pair(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    return float(lo), float(hi or lo)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("crash", "hostile", "mixup"), default="crash")
    p.add_argument("--per-bottle", type=float, default=0.05,
                   help="mixup: the text robot's seconds per bottle (default 0.05)")
    p.add_argument("--settle", type=float, default=0.3,
                   help="mixup: the server's --robot-settle (default 0.3)")
    p.add_argument("--quick", action="store_true",
                   help="short run: 5 kills; hostile faults last 3 s")
    p.add_argument("--cycles", type=int, default=35, help="kill -9s (crash; default 35)")
    p.add_argument("--clients", type=int, default=4, help="client threads (crash; default 4)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--interval", type=_pair, default=(0.5, 2.0), metavar="MIN,MAX",
                   help="seconds between kills (default 0.5,2)")
    p.add_argument("--think", type=_pair, default=(0.05, 0.25), metavar="MIN,MAX",
                   help="a client's pause between submits (default 0.05,0.25)")
    p.add_argument("--give-up", type=float, default=60.0,
                   help="a client stops retrying one submit after this many s (default 60)")
    p.add_argument("--duration", type=float, default=None,
                   help="cap in s: the kill phase (crash, default 600) or each fault's "
                        "phase (hostile, default fault seconds * tasks + 60)")
    p.add_argument("--drain-timeout", type=float, default=180.0,
                   help="longest wait for the queue to drain at the end (default 180)")
    p.add_argument("--speed", type=float, default=50.0, help="simulator speed (default 50)")
    p.add_argument("--fault", choices=(*HOSTILE, "all"), default="all",
                   help="hostile mode's fault (default all, one after the other)")
    p.add_argument("--hostile-tasks", type=int, default=2,
                   help="tasks submitted while the fault is active (default 2)")
    p.add_argument("--healthy-timeout", type=float, default=30.0,
                   help="how long the healthy task may take after the hostile ones")
    p.add_argument("--flood-rate", type=float, default=1000.0, help="progress lines/s")
    p.add_argument("--flood-seconds", type=float, default=None, help="default 20 (quick: 3)")
    p.add_argument("--flood-items", action="store_true", help="flood lines carry an item")
    p.add_argument("--noise-rate", type=int, default=1_000_000, help="random bytes/s")
    p.add_argument("--noise-seconds", type=float, default=None, help="default 5 (quick: 3)")
    p.add_argument("--deep-levels", type=int, default=985, help="deep result's nesting")
    p.add_argument("--keep-logs", metavar="DIR",
                   help="copy the server's output and --log-file into DIR")
    p.add_argument("--json", action="store_true",
                   help="print the figures as JSON on stdout (tables go to stderr)")
    args = p.parse_args(argv)
    if args.quick:
        args.cycles = min(args.cycles, 5)
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    if args.flood_seconds is None:
        args.flood_seconds = 3.0 if args.quick else 20.0
    if args.noise_seconds is None:
        args.noise_seconds = 3.0 if args.quick else 5.0
    if args.mode == "crash" and args.duration is None:
        args.duration = 600.0
    if args.clients < 1 or args.hostile_tasks < 1:
        p.error("--clients and --hostile-tasks must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    results: list[dict[str, Any]] = []
    ok = True
    if args.mode == "mixup":
        figures, ok = run_mixup(args)
        print_table(f"Soak: text robot still working after kill -9 x{figures['kills']}, "
                    f"{args.clients} clients (seed {args.seed})", mixup_rows(figures), file=out)
        results.append(figures)
    elif args.mode == "crash":
        figures, ok = run_crash(args)
        print_table(f"Soak: kill -9 x{figures['restarts']}, {args.clients} retrying clients "
                    f"(seed {args.seed})", crash_rows(figures), file=out)
        results.append(figures)
    else:
        for fault in HOSTILE if args.fault == "all" else (args.fault,):
            log(f"hostile: {fault} ...")
            figures, good = run_hostile(args, fault)
            print_table(f"Soak: hostile robot, fault {fault}", hostile_rows(figures), file=out)
            results.append(figures)
            ok = ok and good
    if args.json:
        print(json.dumps({"ok": ok, "args": {k: v for k, v in vars(args).items()},
                          "results": results}, default=lambda o: asdict(o) if hasattr(
                              o, "__dataclass_fields__") else str(o), indent=1))
    print(f"soak {'PASSED' if ok else 'FAILED'}", file=out, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
