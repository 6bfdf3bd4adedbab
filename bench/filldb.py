"""Fixture generator: a task database holding N finished tasks (history), fast.

Uses tasks/store/taskstore.py to create the schema, then inserts rows with executemany in
batches (acceptable for a fixture only; the server never writes this way).
Run: .venv/bin/python bench/filldb.py PATH N
"""

from __future__ import annotations

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tasks.store import TaskStore  # noqa: E402

CMDS = [("MOVE_TO", {"x": 1, "y": 2, "z": 3}), ("HOME", {}),
        ("SCAN_QRCODE", {"rack": "A", "positions": [1, 2, 3]}), ("PICK", {"position": 4})]


def fill(path: str, n: int, batch: int = 5000) -> float:
    """Create `path` with n finished tasks (about 1% failed); return seconds taken."""
    t0 = time.monotonic()
    store = TaskStore(path)
    store.open()
    conn = store._writer
    assert conn is not None
    now = time.time() - 3600  # an hour ago: far from being pruned (keep_days)
    done = 0
    while done < n:
        rows = []
        for i in range(done, min(n, done + batch)):
            cmd, params = CMDS[i % len(CMDS)]
            failed = i % 100 == 99
            submitted = now - (n - i) * 0.01
            result = {"success": not failed, "message": f"{cmd}完成" if not failed else "bad"}
            rows.append((f"task_hist_{i:08d}", cmd, json.dumps(params),
                         "failed" if failed else "completed", submitted, submitted + 0.001,
                         submitted + 0.005, json.dumps(result, ensure_ascii=False)))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO tasks(task_id, cmd_type, params, status, submitted, "
                         "started, ended, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        done += len(rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return time.monotonic() - t0


if __name__ == "__main__":
    print(f"{fill(sys.argv[1], int(sys.argv[2])):.2f} s")
