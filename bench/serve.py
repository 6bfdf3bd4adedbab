"""The real server (RobotServer + simulator robot on a pty) in a bench process of its own.

Logging and interpreter settings are those of `main.py serve --log-file F` (INFO
unless --log-level, one access line per request; main.tune_interpreter): the rotating
file F plus the console, which is F.stderr here (os.devnull when F is). Hooks record
CLOCK_MONOTONIC timestamps (the same clock in every process on Linux) of:
* every line the simulator reads ("rx") and writes ("tx", taken after the write);
* every final state committed by the store ("commit", taken after COMMIT returned).

With --hops, also the hops of a task's end, from the robot's result line to the
long-poll's reply (bench/features/completion.py): `sim_write`, `line_read` (the link's
reader has the line), `routed` (handed to the command in flight), `worker` (the worker
thread has it), `commit_begin`/`commit_done` (the final state's transaction),
`waiters_set`, `published` (the event bus has the final event), `worker_back` (the
worker asks for its next task), `waiter_woken` (the long-poll's thread runs again),
`reply_written`. The
hooks wrap methods in this process only: production code carries no timestamps.

Protocol: prints one JSON line {"port", "pid", "start_s"} once serving, then answers
one JSON line per command read from stdin: `marks` (and clear them), `hops` (and clear
them), `rss`, `quit`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import threading
import time
from typing import Any

# BENCH_SERVER_ROOT: run another checkout (e.g. a patched copy) with the same bench.
ROOT = os.environ.get("BENCH_SERVER_ROOT") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as server_main  # noqa: E402
from server.runtime import RobotServer  # noqa: E402


def install_hooks(server: RobotServer, marks: list[list[Any]], lock: threading.Lock) -> None:
    sim, store = server.simulator, server.store
    assert sim is not None and store is not None
    on_line, write, finish = sim._on_line, sim._write, store.finish

    def hooked_on_line(line: bytes) -> None:
        t = time.monotonic()
        with lock:
            marks.append([t, "rx", line.decode("utf-8", "replace")])
        on_line(line)

    def hooked_write(data: bytes) -> None:
        write(data)
        t = time.monotonic()
        with lock:
            marks.append([t, "tx", data.decode("utf-8", "replace")])

    def hooked_finish(task_id: str, status: str, *args: Any, **kw: Any) -> bool:
        done = finish(task_id, status, *args, **kw)
        t = time.monotonic()
        with lock:
            marks.append([t, "commit", task_id])
        return done

    sim._on_line = hooked_on_line  # type: ignore[method-assign]
    sim._write = hooked_write  # type: ignore[method-assign]
    store.finish = hooked_finish  # type: ignore[method-assign]


def install_hop_hooks(server: RobotServer, hops: list[list[Any]],
                      lock: threading.Lock) -> None:
    """Stamp each hop of a task's end (CLOCK_MONOTONIC, shared with the bench client)."""
    from server import http as server_http

    def mark(name: str) -> None:
        t = time.monotonic()
        with lock:
            hops.append([t, name])

    sim, link, manager = server.simulator, server.link, server.manager
    assert link is not None and manager is not None
    if sim is not None:  # else the robot is a process of its own (--robot-process)
        write = sim._write

        def sim_write(data: bytes) -> None:
            write(data)
            if b'"result"' in data:
                mark("sim_write")

        sim._write = sim_write  # type: ignore[method-assign]
    connection, commands = link._connection, link._commands
    on_line = connection._on_line

    def line(data: bytes) -> None:
        result = b'"result"' in data
        if result:
            mark("line_read")
        on_line(data)
        if result:
            mark("routed")

    connection._on_line = line
    result = commands._result

    def worker(pending: Any, reply: Any) -> Any:
        mark("worker")
        return result(pending, reply)

    commands._result = worker  # type: ignore[method-assign]
    store_finish = manager.store.finish

    def finish(*args: Any, **kw: Any) -> Any:
        mark("commit_begin")
        done = store_finish(*args, **kw)
        mark("commit_done")
        return done

    manager.store.finish = finish  # type: ignore[method-assign]
    waiters = manager.waiters
    set_final, wait = waiters.set_final, waiters.wait

    def hooked_set_final(task_id: str) -> None:
        mark("waiters_set")
        set_final(task_id)

    def hooked_wait(task_id: str, get: Any, timeout: float) -> Any:
        calls = [0]

        def second_get(tid: str) -> Any:
            calls[0] += 1
            if calls[0] == 2:  # the first is before the wait; the second after it
                mark("waiter_woken")
            return get(tid)

        return wait(task_id, second_get, timeout)

    publish, take = manager.events.publish, manager.take

    def hooked_publish(kind: str, data: dict[str, Any]) -> Any:
        event = publish(kind, data)
        if kind == "task" and data.get("status") in ("completed", "failed", "cancelled"):
            mark("published")
        return event

    def hooked_take(timeout: float) -> Any:
        mark("worker_back")  # the worker is back for the next task (then blocks)
        return take(timeout)

    manager.events.publish = hooked_publish  # type: ignore[method-assign]
    manager.take = hooked_take  # type: ignore[method-assign]
    waiters.set_final = hooked_set_final  # type: ignore[method-assign]
    waiters.wait = hooked_wait  # type: ignore[method-assign]
    send = server_http.Handler._send

    def hooked_send(handler: Any, response: Any) -> None:
        send(handler, response)
        if "wait=" in handler.path:
            mark("reply_written")

    server_http.Handler._send = hooked_send  # type: ignore[method-assign]
    began: list[float] = []

    def gc_pause(phase: str, info: dict[str, Any]) -> None:
        # The cyclic collector stops every thread: a tail the hops alone would not explain.
        if phase == "start":
            began[:] = [time.monotonic()]
        elif began:
            mark(f"gc{info['generation']}:{(time.monotonic() - began[0]) * 1000:.3f}")

    gc.callbacks.append(gc_pause)


def sim_only(speed: float, marks_path: str) -> None:
    """--sim-only: the simulated robot alone, as a robot of its own would be (no GIL
    shared with the server); each result line's write time goes to ``marks_path``."""
    from robot.sim.simulator import RobotSimulator

    sim = RobotSimulator(speed)
    marks = open(marks_path, "a", encoding="ascii", buffering=1)  # noqa: SIM115
    write = sim._write

    def stamped(data: bytes) -> None:
        write(data)
        if b'"result"' in data:
            marks.write(f"{time.monotonic()!r}\n")

    sim._write = stamped  # type: ignore[method-assign]
    print(json.dumps({"port": sim.start()}), flush=True)
    sys.stdin.read()  # until the server process closes our stdin
    sim.stop()
    marks.close()


class RobotProcess:
    """--robot-process: the simulator in a child process (sim_only) on its own pty."""

    def __init__(self, speed: float, marks_path: str) -> None:
        import subprocess

        self.marks_path, self.read_to = marks_path, 0
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--db", "-", "--sim-only",
             "--sim-speed", str(speed), "--sim-marks", marks_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def take_marks(self) -> list[list[Any]]:
        with open(self.marks_path, encoding="ascii") as f:
            f.seek(self.read_to)
            text = f.read()
        done = text.rfind("\n") + 1
        self.read_to += done
        return [[float(x), "sim_write"] for x in text[:done].split()]

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def console_lines(server: RobotServer) -> Any:
    """The console's task lines (main.py serve's ConsoleEvents), written to stderr (the
    console file); None in a checkout without them."""
    try:
        from console.events import ConsoleEvents
    except ImportError:
        return None
    lines = ConsoleEvents(server.events, "en",
                          write=lambda line: print(line, file=sys.stderr, flush=True))
    lines.start()
    return lines


def make_server(**settings: Any) -> RobotServer:
    """A server without the dashboard (GET / is JSON), in this checkout or an older one."""
    try:
        from settings import Settings
    except ImportError:  # BENCH_SERVER_ROOT: a checkout from before settings.py
        from server.runtime import ServerSettings  # type: ignore[attr-defined]

        return RobotServer(ServerSettings(**settings, static_dir=None))
    return RobotServer(Settings(**settings), static_dir=None)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--sim-speed", type=float, default=200.0)
    p.add_argument("--max-queue", type=int, default=1_000_000)
    p.add_argument("--log-file", default=os.devnull)
    p.add_argument("--log-level", default=None)
    p.add_argument("--no-hooks", action="store_true")
    p.add_argument("--hops", action="store_true", help="stamp the hops of each task's end")
    p.add_argument("--robot-process", action="store_true",
                   help="the simulator in a process of its own (implies --no-hooks)")
    p.add_argument("--sim-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sim-marks", default=os.devnull, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sim_only:
        sim_only(args.sim_speed, args.sim_marks)
        return
    robot = None
    if args.robot_process:
        robot = RobotProcess(args.sim_speed, args.db + ".robot-marks")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = sys.stdout
    # The console of production; not F itself, or every line would be written there twice.
    console = os.devnull if args.log_file == os.devnull else args.log_file + ".stderr"
    sys.stderr = open(console, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
    tune = getattr(server_main, "tune_interpreter", None)  # absent in older checkouts
    if tune is not None:
        tune()
    else:
        sys.setswitchinterval(0.001)
    server_main.setup_logging(args.log_level, args.log_file)
    server = make_server(host="127.0.0.1", port=0,
                         robot=robot.port if robot is not None else "sim",
                         sim_speed=args.sim_speed,
                         db=args.db, max_queue=args.max_queue,
                         reconnect_min=0.05, reconnect_max=0.5)
    t0 = time.monotonic()
    server.start()
    start_s = time.monotonic() - t0
    lines = console_lines(server)  # as main.py serve: one console line per task event
    after_start = getattr(server_main, "tune_after_start", None)  # absent in older ones
    if after_start is not None:
        after_start()
    marks: list[list[Any]] = []
    lock = threading.Lock()
    if not args.no_hooks and robot is None:
        install_hooks(server, marks, lock)
    hops: list[list[Any]] = []
    if args.hops:
        install_hop_hooks(server, hops, lock)
    print(json.dumps({"port": server.address[1], "pid": os.getpid(), "start_s": start_s}),
          file=out, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "marks":
            with lock:
                taken = marks[:]
                marks.clear()
            reply: dict[str, Any] = {"marks": taken}
        elif command == "hops":
            with lock:
                taken = hops[:]
                hops.clear()
            if robot is not None:
                taken += robot.take_marks()
            reply = {"hops": sorted(taken)}
        elif command == "rss":
            with open("/proc/self/status", encoding="ascii") as f:
                rss = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
            reply = {"rss_kib": rss, "threads": threading.active_count()}
        elif command == "quit":
            break
        else:
            reply = {"error": f"unknown command {command!r}"}
        print(json.dumps(reply, ensure_ascii=False), file=out, flush=True)
    server.stop()
    if lines is not None:
        lines.stop()
    if robot is not None:
        robot.stop()
    print(json.dumps({"stopped": True}), file=out, flush=True)


if __name__ == "__main__":
    main()
