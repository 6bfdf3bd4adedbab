"""All benchmarks in one run, one combined table (markdown) with ratios and verdicts.

Run: .venv/bin/python bench/run_all.py [--quick] [--out FILE]
Takes about 4 minutes (--quick: about 1.5). Needs nothing but the project and,
if installed, wrk (else bench/loadgen.py generates the load in its own process).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_throughput  # noqa: E402
import latency  # noqa: E402
import scale  # noqa: E402
from common import have_wrk, print_table  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 repetition, shorter runs")
    p.add_argument("--out", help="also write the tables to this file")
    args = p.parse_args()
    reps, duration = (1, 2.0) if args.quick else (3, 4.0)
    t0 = time.monotonic()
    print(f"# bench: {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load by {'wrk' if have_wrk() else 'bench/loadgen.py'}",
          flush=True)
    text = print_table("HTTP throughput, 16 keep-alive clients (server vs reference)",
                       http_throughput.rows(*http_throughput.measure(reps, duration)))
    n = 20 if args.quick else 60
    text += print_table("Latency (background: 16 clients, ~500 req/s of GET /queue/status)",
                        latency.rows(latency.measure(n, n // 2, n)))
    text += print_table("History size",
                        scale.rows(scale.measure(reps, duration - 1, 100, 100_000)))
    footer = f"\n(total {time.monotonic() - t0:.0f} s)\n"
    print(footer)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + footer)


if __name__ == "__main__":
    main()
