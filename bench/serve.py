"""The real server (RobotServer + simulator robot on a pty) in a bench process of its own.

Logging and interpreter settings are those of `main.py serve --log-file F` (INFO
unless --log-level, one access line per request; main.tune_interpreter): the rotating
file F plus the console, which is F.stderr here (os.devnull when F is). Hooks record
CLOCK_MONOTONIC timestamps (the same clock in every process on Linux) of:
* every line the simulator reads ("rx") and writes ("tx", taken after the write);
* every final state committed by the store ("commit", taken after COMMIT returned).

Protocol: prints one JSON line {"port", "pid", "start_s"} once serving, then answers
one JSON line per command read from stdin: `marks` (and clear them), `rss`, `quit`.
"""

from __future__ import annotations

import argparse
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
    args = p.parse_args()
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
    server = make_server(host="127.0.0.1", port=0, robot="sim", sim_speed=args.sim_speed,
                         db=args.db, max_queue=args.max_queue,
                         reconnect_min=0.05, reconnect_max=0.5)
    t0 = time.monotonic()
    server.start()
    start_s = time.monotonic() - t0
    marks: list[list[Any]] = []
    lock = threading.Lock()
    if not args.no_hooks:
        install_hooks(server, marks, lock)
    print(json.dumps({"port": server.address[1], "pid": os.getpid(), "start_s": start_s}),
          file=out, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "marks":
            with lock:
                taken = marks[:]
                marks.clear()
            reply: dict[str, Any] = {"marks": taken}
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
    print(json.dumps({"stopped": True}), file=out, flush=True)


if __name__ == "__main__":
    main()
