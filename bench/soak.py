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
back, restarts resumed at once; no scan may complete with another rack's bottles.

The modes live in bench/soaks/ (crash.py, hostile.py, mixup.py; clients.py and
harness.py shared); this script parses the command line and dispatches.

Run: .venv/bin/python bench/soak.py [--quick] [--mode crash|hostile|mixup] [--json]
(docs/durability.md)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from dataclasses import asdict
from typing import Any

# bench/ first (its `common`, the `soaks` package), then the project (robot.sim, tests.*).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table  # noqa: E402

sys.path.insert(1, ROOT)
from soaks.crash import crash_rows, run_crash  # noqa: E402
from soaks.harness import log  # noqa: E402
from soaks.hostile import HOSTILE, hostile_rows, run_hostile  # noqa: E402
from soaks.mixup import mixup_rows, run_mixup  # noqa: E402


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
