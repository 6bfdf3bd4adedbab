"""The audit trail's cost (issue 31), before and after, side by side in one run.

1. POST / (queue paused, 16 keep-alive clients, the case of bench/http_throughput.py):
   the server of commit cd15828 (no audit row; a git worktree of it in a temp dir, run by
   bench/serve.py with BENCH_SERVER_ROOT) and this tree's (an audit row committed with
   every submit), each in its own process, in two access modes:
   * anonymous: nothing set up (no token, no principal);
   * token: `Authorization: Bearer <token>` on every request; before, the server's
     `--api-token` (the only token there was); after, a principal's (role operator,
     `main.py users add`), resolved by its SHA-256 against the principals table.
   The four servers take turns in each repetition (order reversed every other one); the
   ratio is the median of the paired after/before ratios. Afterwards each after-server's
   chain is verified and its rows counted against its tasks.
2. `audit verify` over --rows rows: a database filled by TaskStore.commit() with audit
   rows (1,000 per transaction), then TaskStore.audit_verify() and `main.py audit verify
   --db PATH` (a process), best of 3.
3. WAL pages one submit writes, with and without its audit row (no timing).

Run: .venv/bin/python bench/audit.py [--reps 5] [--duration 4] [--rows 100000]
     [--before cd15828] [--skip-http] [--skip-verify]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    HOST,
    MOVE,
    PYTHON,
    ROOT,
    Load,
    ServerProcess,
    _wrk_ms,
    fmt,
    have_wrk,
    http_request,
    median,
    run_load,
    temp_dir,
)

sys.path.insert(1, ROOT)  # this tree's store (after bench/: a child's serve.py goes first)

BEFORE = "cd15828"
CLIENTS = 16
TOKEN_ENV = "BENCH_API_TOKEN"
# (mode, side): side "before" runs the worktree of BEFORE, "after" this tree.
SERVERS = [("anonymous", "before"), ("anonymous", "after"),
           ("token", "before"), ("token", "after")]


# -- setup ----------------------------------------------------------------------------------
def call(port: int, method: str, path: str, body: Any = None, token: str | None = None,
         timeout: float = 10.0) -> tuple[int, Any]:
    """One request on a new connection (setup and checks, not measured)."""
    return http_request(port, method, path, body, timeout, token)


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[str]:
    """A detached git worktree of `commit` in a temp dir, removed afterwards."""
    parent = tempfile.mkdtemp(prefix="robot-bench-before-")
    path = os.path.join(parent, "tree")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, commit],
                   check=True, capture_output=True, text=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", path],
                       capture_output=True, text=True)
        shutil.rmtree(parent, ignore_errors=True)


@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """os.environ with `values` set (None: unset) while a child process is spawned."""
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in values.items() if v is not None})
    for key in (k for k, v in values.items() if v is None):
        os.environ.pop(key, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, os.path.join(ROOT, "main.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def add_principal(db: str) -> str:
    """`main.py users add` on the (not yet served) database: the token it printed on a line
    of its own (checked with GET /me once served)."""
    done = cli("users", "add", "bench", "--role", "operator", "--kind", "program", "--db", db)
    tokens = [x.strip() for x in done.stdout.splitlines()
              if re.fullmatch(r"[A-Za-z0-9_-]{32,}", x.strip())]
    if done.returncode != 0 or not tokens:
        raise RuntimeError(f"main.py users add: {done.returncode} {done.stdout}{done.stderr}")
    return tokens[-1]


def start(stack: contextlib.ExitStack, tmp: str, mode: str, side: str,
          before_root: str) -> tuple[ServerProcess, str | None, str]:
    """One server process; its port, the token its clients send, how it was set up."""
    name = f"{mode}-{side}"
    db = os.path.join(tmp, f"{name}.db")
    srv = ServerProcess(db, log_file=os.path.join(tmp, f"{name}.log"))
    api_token = token = None
    how = "nothing set up"
    if mode == "token" and side == "before":
        api_token = token = f"bench-{os.urandom(16).hex()}"
        srv.args[1:2] = [os.path.abspath(__file__), "--serve-with-token"]
        how = "--api-token"
    elif mode == "token":
        token, how = add_principal(db), "a principal (main.py users add, role operator)"
    root = before_root if side == "before" else ROOT
    with environ(BENCH_SERVER_ROOT=root, **{TOKEN_ENV: api_token}):
        stack.enter_context(srv)
    if mode == "token" and side == "after":
        status, doc = call(srv.port, "GET", "/me", token=token)
        if status != 200 or doc.get("name") != "bench":
            raise RuntimeError(f"GET /me with the principal's token: {status} {doc}")
    status, doc = call(srv.port, "POST", "/queue/pause", token=token)
    if status != 200:
        raise RuntimeError(f"{name}: POST /queue/pause answered {status} {doc}")
    return srv, token, how


# -- load -----------------------------------------------------------------------------------
def post_load(port: int, token: str | None, duration: float, tmp: str) -> Load:
    """16 keep-alive clients POSTing MOVE_TO for `duration` s (wrk; with a header)."""
    if not have_wrk():
        if token:
            raise RuntimeError("the token mode needs wrk (apt-get install -y wrk)")
        return run_load(port, "/", method="POST", body=MOVE, connections=CLIENTS,
                        duration=duration, tmp=tmp)
    fd, script = tempfile.mkstemp(suffix=".lua", dir=tmp)
    with os.fdopen(fd, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = [[{json.dumps(MOVE)}]]\n")
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        if token:
            f.write(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{CLIENTS}", f"-d{duration:g}s", "--latency",
                              "--timeout", "5s", "-s", script, f"http://{HOST}:{port}/"],
                             capture_output=True, text=True, timeout=duration + 30,
                             check=True).stdout
    finally:
        os.unlink(script)
    return parse_wrk(out)


def parse_wrk(out: str) -> Load:
    ms = _wrk_ms
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"wrk's output not understood:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Load(float(rps.group(1)), ms(lat.get("50", "")), ms(lat.get("90", "")),
                ms(lat.get("99", "")), int(total.group(1)), errors, "wrk", {"stdout": out})


# -- part 1: POST / before and after -----------------------------------------------------------
Runs = dict[tuple[str, str], list[tuple[Load, float]]]  # (mode, side) -> (load, CPU µs/req)


def measure_post(reps: int, duration: float, before: str) -> tuple[Runs, dict[str, Any]]:
    runs: Runs = {key: [] for key in SERVERS}
    notes: dict[str, Any] = {}
    with temp_dir() as tmp, worktree(before) as before_root, contextlib.ExitStack() as stack:
        servers = {key: start(stack, tmp, *key, before_root) for key in SERVERS}
        for key, (_, _, how) in servers.items():
            notes[f"setup {key[0]} {key[1]}"] = how
        for srv, token, _ in servers.values():  # warm-up, not counted
            post_load(srv.port, token, 1.0, tmp)
        for rep in range(reps):
            order = SERVERS if rep % 2 == 0 else SERVERS[::-1]
            for key in order:
                srv, token, _ = servers[key]
                cpu = srv.cpu_seconds()
                load = post_load(srv.port, token, duration, tmp)
                cpu_us = (srv.cpu_seconds() - cpu) * 1e6 / max(load.requests, 1)
                runs[key].append((load, cpu_us))
                print(f"  rep {rep + 1} {key[0]:<9} {key[1]:<6} {load.rps:8.0f} submits/s  "
                      f"p50 {load.p50:6.2f} ms  p99 {load.p99:7.2f} ms  "
                      f"CPU {cpu_us:5.0f} µs/req  errors {load.errors}",
                      file=sys.stderr, flush=True)
        for key in SERVERS:  # stop each, then read its database
            srv = servers[key][0]
            srv.__exit__(None, None, None)
            if key[1] == "after":
                notes[f"chain {key[0]}"] = check_chain(srv.db)
    return runs, notes


def check_chain(db: str) -> str:
    """The after-server's trail once it stopped: intact, one row per task (+ setup rows)."""
    from tasks.store.audit import verify

    with contextlib.closing(sqlite3.connect(db)) as conn:
        verified = verify(conn)
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        submits = conn.execute("SELECT count(*) FROM audit WHERE action = 'task.submit'"
                               ).fetchone()[0]
    return (f"chain ok={verified.ok}, {verified.rows:,} rows, {submits:,} task.submit rows "
            f"for {tasks:,} tasks")


def post_table(runs: Runs, before: str) -> list[str]:
    lines = [f"| POST / (paused), {CLIENTS} clients | before ({before}) | after | "
             "after / before |", "|---|---|---|---|"]
    for mode in ("anonymous", "token"):
        b, a = runs[(mode, "before")], runs[(mode, "after")]
        paired = [y.rps / x.rps for (x, _), (y, _) in zip(b, a, strict=True)]
        cpu_b, cpu_a = median([c for _, c in b]), median([c for _, c in a])
        rps_b, rps_a = median([x.rps for x, _ in b]), median([x.rps for x, _ in a])
        lines.append(f"| {mode}: submits/s (median; ratio: median of paired runs) | "
                     f"{fmt(rps_b)} | {fmt(rps_a)} | {median(paired):.2f}x "
                     f"({min(paired):.2f}-{max(paired):.2f}) |")
        for q in ("p50", "p99"):
            vb = median([getattr(x, q) for x, _ in b])
            va = median([getattr(x, q) for x, _ in a])
            lines.append(f"| {mode}: {q} ms | {fmt(vb, 2)} | {fmt(va, 2)} | {va / vb:.2f}x |")
        lines.append(f"| {mode}: server CPU µs per submit | {fmt(cpu_b)} | {fmt(cpu_a)} | "
                     f"{cpu_a / cpu_b:.2f}x |")
        errors = sum(x.errors for x, _ in b + a)
        if errors:
            lines.append(f"| {mode}: errors (socket or non-2xx) | | {errors} | |")
    return lines


# -- part 2: audit verify over N rows ---------------------------------------------------------
def measure_verify(rows: int, batch: int = 1000, repeat: int = 3) -> list[str]:
    from tasks.store.audit import AuditEntry
    from tasks.store.taskstore import TaskStore

    out: list[str] = []
    with temp_dir() as tmp:
        db = os.path.join(tmp, "audit.db")
        store = TaskStore(db)
        store.open()
        t0 = time.perf_counter()
        for start_seq in range(0, rows, batch):
            store.commit([AuditEntry(
                "alice", "operator", "10.0.0.5", "task.submit",
                target=f"20261206-140203-{i:06x}", before=None, after="pending",
                reason="weekly calibration" if i % 10 == 0 else None,
                request_id=os.urandom(8).hex()).statement()
                for i in range(start_seq, min(start_seq + batch, rows))])
        fill_s = time.perf_counter() - t0
        out.append(f"| fill: {rows:,} rows, {batch:,} per transaction | {fill_s:.2f} s | "
                   f"{rows / fill_s:,.0f} rows/s |")
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            verified = store.audit_verify()
            times.append(time.perf_counter() - t0)
            if not (verified.ok and verified.rows == rows):
                raise RuntimeError(f"audit_verify: {verified}")
        store.close()
        best = min(times)
        out.append(f"| `TaskStore.audit_verify()`, best of {repeat} "
                   f"({', '.join(f'{t:.2f}' for t in times)} s) | {best:.2f} s | "
                   f"{rows / best:,.0f} rows/s |")
        if cli("audit", "--help", timeout=30).returncode == 0:
            times, said = [], ""
            for _ in range(repeat):
                t0 = time.perf_counter()
                done = cli("audit", "verify", "--db", db)
                times.append(time.perf_counter() - t0)
                said = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
                if done.returncode != 0:
                    raise RuntimeError(f"main.py audit verify: {done.stdout}{done.stderr}")
            t0 = time.perf_counter()
            cli("--help", timeout=30)
            bare = time.perf_counter() - t0
            best = min(times)
            out.append(f"| `main.py audit verify --db PATH` (a process), best of {repeat} "
                       f"(printed `{said}`; `main.py --help` alone {bare:.2f} s) | "
                       f"{best:.2f} s | {rows / best:,.0f} rows/s |")
        else:
            out.append("| `main.py audit verify` | not in this tree yet | |")
        out.append(f"| database file | {os.path.getsize(db) / 2**20:.1f} MiB | |")
    return ["| audit verify | time | rate |", "|---|---|---|", *out]


# -- part 3: what a submit writes ---------------------------------------------------------------
def measure_wal(n: int = 60) -> list[str]:
    """WAL pages one submit adds (one submit per COMMIT, as when submits do not overlap):
    this tree's store, a NewTask without and with its audit row, and with two indexes on
    the audit table (principal, target) as a first version had. Deterministic: no
    timing. n stays below the automatic checkpoint's 1,000 pages."""
    from tasks.store.audit import AuditEntry
    from tasks.store.commit import NewTask
    from tasks.store.taskstore import TaskStore

    pages: dict[str, float] = {}
    for variant in ("no audit row", "audit row", "audit row, two indexes added"):
        with temp_dir() as tmp:
            db = os.path.join(tmp, "wal.db")
            store = TaskStore(db)
            store.open()
            if "indexes" in variant:
                store.commit([(f"CREATE INDEX audit_{c} ON audit({c}, seq)", ())
                              for c in ("principal", "target")])
            with contextlib.closing(sqlite3.connect(db)) as conn:
                size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for i in range(n):
                audit = None if variant == "no audit row" else AuditEntry(
                    "anonymous", "admin", "127.0.0.1", "task.submit",
                    request_id=os.urandom(16).hex())
                store.insert(NewTask(f"20261207-000000-{i:06x}", "MOVE_TO", MOVE["params"],
                                     time.time(), submitted_by="anonymous", audit=audit))
            pages[variant] = os.path.getsize(db + "-wal") / (size + 24) / n
            store.close()
    base = pages["no audit row"]
    return ["| one submit per COMMIT | WAL pages (4 KiB) per submit | vs no audit row |",
            "|---|---|---|", *(f"| {k} | {v:.2f} | {v / base:.2f}x |" for k, v in pages.items())]


def serve_with_token() -> None:
    """Child mode: bench/serve.py with Settings(api_token=$BENCH_API_TOKEN)."""
    token = os.environ[TOKEN_ENV]
    sys.argv = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve.py"),
                *sys.argv[2:]]
    import serve

    plain = serve.make_server
    serve.make_server = lambda **settings: plain(**settings, api_token=token)
    serve.main()


def main() -> None:
    if sys.argv[1:2] == ["--serve-with-token"]:
        serve_with_token()
        return
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--before", default=BEFORE, help="the commit without the audit row")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--skip-verify", action="store_true")
    args = p.parse_args()
    print(f"# machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version}, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{'wrk' if have_wrk() else 'bench/loadgen.py'}", flush=True)
    if not args.skip_http:
        runs, notes = measure_post(args.reps, args.duration, args.before)
        print(f"\n## POST / before and after, {args.reps} x {args.duration:g} s each, "
              "alternating\n")
        print("\n".join(post_table(runs, args.before)))
        for key, value in notes.items():
            print(f"- {key}: {value}")
    if not args.skip_verify:
        print(f"\n## audit verify over {args.rows:,} rows\n")
        print("\n".join(measure_verify(args.rows)), flush=True)
        print("\n## WAL written per submit (this tree's store)\n")
        print("\n".join(measure_wal()), flush=True)


if __name__ == "__main__":
    main()
