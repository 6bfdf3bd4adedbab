"""The user guide's own clients, run unchanged but for the server address."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")),
                                reason="curl and jq are needed (apt-get install curl jq)")


def _copy_command_file(tmp_path) -> None:
    shutil.copy(os.path.join(ROOT, "SCAN_QR_CODE_command.json"), tmp_path)


@pytest.mark.timeout(60)
def test_guide_curl_jq_loop(server, tmp_path) -> None:
    _copy_command_file(tmp_path)
    with open(os.path.join(ROOT, "examples", "guide_test.sh"), encoding="utf-8") as fh:
        script = fh.read()
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=50, env={**os.environ, "SERVER": server.url})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Task ID: task_")
    assert "Status: completed" in lines
    final = json.loads(out.stdout[out.stdout.index("{"):])
    assert final["status"] == "completed"
    assert final["result"]["scanned_count"] == 3


@pytest.mark.timeout(60)
def test_guide_requests_client(server, tmp_path) -> None:
    _copy_command_file(tmp_path)
    with open(os.path.join(ROOT, "examples", "guide_client.py"), encoding="utf-8") as fh:
        source = fh.read()
    original = 'SERVER_URL = "http://172.16.11.130:8090"'
    assert original in source
    (tmp_path / "client.py").write_text(source.replace(original, f'SERVER_URL = "{server.url}"'),
                                        encoding="utf-8")
    out = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert "✓ 任务已提交: task_" in out.stdout
    assert "✓ 任务完成" in out.stdout
    assert "扫描完成，数量: 3" in out.stdout
