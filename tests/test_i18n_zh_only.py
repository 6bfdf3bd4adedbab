"""Not a word of English in Chinese: every zh catalogue entry, and what the console says
when it refuses to start, run as real subprocesses with ``--lang zh``.

What may stay in Latin letters is what an operator types or reads as a name: placeholders
(filled with paths, ids, the robot's own words), quoted text, paths and file names, URLs,
flags, command lines, header names, snake_case identifiers, and the short list of names
below (protocols, the robot's words, status names). Anything else of two letters or more
is an English word left in a Chinese sentence.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys

import pytest

import i18n
from tests.conftest import ROOT
from tests.proc import ServerProcess, free_port

STATIC = os.path.join(ROOT, "server", "static")

# Names, not words: an operator reads or types them as they are.
ALLOWED = {
    # protocols, formats, the database
    "HTTP", "JSON", "API", "URL", "IP", "IPv", "CIDR", "ASCII", "UTF", "BOM", "SQLite", "WAL",
    "Python",
    "GET", "POST", "Host", "Origin", "chunked",
    # the robot's words on the wire, and the values of --robot and --robot-protocol
    "PING", "PONG", "STOP", "OK", "ERR", "BUSY", "ALARM", "STATUS", "BOTTLE", "sim", "json",
    "text", "COM",
    # status names (the guide's), JSON literals, languages, keys, metavariables
    "pending", "running", "completed", "failed", "cancelled", "true", "false", "zh", "en",
    "Ctrl", "ORIGIN",
}

_STRIPPED = [
    re.compile(r"\{[^{}]*\}"),  # placeholders
    re.compile(r"\b(?:https?|socket)://\S+"),  # URLs
    re.compile(r"'[^'\n]*'|\"[^\"\n]*\"|`[^`\n]*`"),  # quoted text
    # command lines, up to the end of the clause
    re.compile(r"\b(?:python|pip|curl)\b[^，。；：、（）()\n]*"),
    re.compile(r"(?<![\w/])(?:[A-Za-z]:\\|\.{0,2}/)[^\s，。；：、（）()]*"),  # paths
    re.compile(r"\b[\w-]+\.(?:json|db|py|md|txt|lock|service|bat|ps1|js|html)\b"),  # files
    re.compile(r"[\w.-]+/[\w./<>-]+"),  # relative paths, media types
    re.compile(r"\b\w+(?:\.\w+)+:\w+\b"),  # package.module:ClassName
    re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*"),  # flags
    re.compile(r"\b(?:[A-Z][A-Za-z]*-)+[A-Z][A-Za-z]*\b"),  # header names: Content-Type
    re.compile(r"\b[A-Za-z0-9]*_\w*"),  # snake_case and ENV_NAMES: identifiers
    re.compile(r"\b\w+(?:\[\d+\])?(?:\.\w+(?:\[\d+\])?)+|\b\w+\[\d+\]"),  # fields: params[1].type
]
_WORD = re.compile(r"[A-Za-z]{2,}")


def english_words(text: str, names: tuple[str, ...] = ()) -> list[str]:
    """The English words left in ``text`` once names (ALLOWED, and ``names``: a lab's
    commands, say), paths and the like are taken out."""
    text = text.replace("{{", " ").replace("}}", " ")
    for pattern in _STRIPPED:
        text = pattern.sub(" ", text)
    return [word for word in _WORD.findall(text) if word not in ALLOWED and word not in names]


def zh_catalogues() -> dict[str, dict[str, str]]:
    with open(os.path.join(STATIC, "i18n-zh.json"), encoding="utf-8") as fh:
        dashboard = json.load(fh)
    return {"i18n/zh": i18n.catalogue("zh"), "server/static/i18n-zh.json": dashboard}


def test_the_rule_finds_english_and_spares_names() -> None:
    assert english_words("无法启动: the task database is in use") == \
        ["the", "task", "database", "is", "in", "use"]
    assert english_words("JSON 格式错误：第 1 行第 2 列（Expecting value）") == ["Expecting",
                                                                            "value"]
    spared = ("任务 {task_id} 的状态是 {status}；请用 POST /queue/resume 恢复，"
              "或 curl -X POST http://127.0.0.1:8080/queue/resume；命令文件 lab.json: "
              "未知的键 'volume'；--robot-protocol package.module:ClassName；"
              "Content-Type 必须是 application/json；ROBOT_API_TOKEN；STOP；Ctrl+C")
    assert english_words(spared) == []


@pytest.mark.parametrize("where", sorted(zh_catalogues()))
def test_no_zh_catalogue_entry_has_an_english_word(where: str) -> None:
    found = {key: words for key, text in zh_catalogues()[where].items()
             if (words := english_words(text))}
    assert not found, f"{where}: English words in Chinese entries: {found}"


@pytest.mark.parametrize(("body", "code", "zh", "en"), [
    (b"{", "invalid_json", "JSON 格式错误：第 1 行第 2 列（此处应为用双引号括起的键名）",
     "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    (b'{"cmd_type": }', "invalid_json", "JSON 格式错误：第 1 行第 14 列（此处应为一个值）",
     "invalid JSON: Expecting value at line 1 column 14"),
    (b'{"a": 1} 2', "invalid_json", "JSON 格式错误：第 1 行第 10 列（值之后还有多余内容）",
     "invalid JSON: Extra data after the value at line 1 column 10"),
    (b'{"a": ' + b"9" * 5000 + b"}", "json_value", "JSON 格式错误：整数位数过多",
     "invalid JSON: an integer with too many digits"),
])
def test_the_json_parsers_detail_is_in_the_clients_language(client, body, code, zh,
                                                            en) -> None:
    for lang, expected in (("zh-CN", zh), ("en", en)):
        r = client.post("/", data=body, headers={"Content-Type": "application/json",
                                                 "Accept-Language": lang})
        assert r.status_code == 400, r.text
        assert (r.json()["code"], r.json()["message"]) == (code, expected)
    assert english_words(zh) == []


def test_json_words_not_known_fall_back_to_a_general_one_not_english() -> None:
    from i18n.stdlib import json_detail

    assert json_detail("Something new in Python 3.99", "zh") == "语法错误"
    assert json_detail("Something new in Python 3.99", "en") == "Something new in Python 3.99"


# -- the console's refusals, in zh -------------------------------------------------------
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _main(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ROBOT_LANG": "zh"})


def _refused(out: subprocess.CompletedProcess, *, logs_allowed: bool = False) -> str:
    """The refusal, checked: failed exit, Chinese, no English word outside names; no log
    line before it (the console keeps to warnings unless asked)."""
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    logs = [line for line in text.splitlines() if LOG_LINE.match(line)]
    if not logs_allowed:
        assert not logs, text
    said = [line for line in text.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert said, text
    assert re.search(r"[\u4e00-\u9fff]", said[-1]), said[-1]
    english = {line: words for line in said if (words := english_words(line))}
    assert not english, f"English in the zh console: {english}\n{text}"
    return "\n".join(said)


def test_a_second_server_on_the_same_database_is_refused_in_chinese(tmp_path) -> None:
    db = str(tmp_path / "tasks.db")
    first = ServerProcess(db, "sim", "--sim-speed", "20")
    try:
        first.wait_ready()
        said = _refused(_main("serve", "--mode", "queue", "--lang", "zh", "--host",
                              "127.0.0.1", "--port", str(free_port()), "--db", db))
        assert "无法启动" in said and db in said and str(first.proc.pid) in said, said
    finally:
        first.stop()


def test_a_bad_commands_file_is_refused_in_chinese(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"X": 1}', encoding="utf-8")
    for command in (["serve", "--mode", "queue", "--port", "0"], ["check", "--port",
                                                                  str(free_port())]):
        said = _refused(_main(*command, "--lang", "zh", "--db", str(tmp_path / "t.db"),
                              "--commands", str(bad)))
        assert str(bad) in said and "'X'" in said, said
    broken = tmp_path / "broken.json"
    broken.write_text('{"commands": [\n  {"name": "A",}\n]}', encoding="utf-8")
    said = _refused(_main("serve", "--mode", "queue", "--port", "0", "--lang", "zh",
                          "--db", str(tmp_path / "t.db"), "--commands", str(broken)))
    assert "第 2 行" in said, said


def test_a_busy_port_is_refused_naming_it_before_the_robot_is_touched(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "tasks.db"
        # INFO on the console: a simulator or a robot link started would say so.
        out = _main("serve", "--mode", "queue", "--lang", "zh", "--host", "127.0.0.1",
                    "--port", str(port), "--robot", "sim", "--db", str(db),
                    "--log-level", "INFO")
        said = _refused(out, logs_allowed=True)
        checked = _refused(_main("check", "--lang", "zh", "--host", "127.0.0.1", "--port",
                                 str(port), "--db", str(db)))
    everything = out.stdout + out.stderr
    assert f"127.0.0.1:{port}" in said and "无法启动" in said, everything
    assert "simulator on" not in everything and "robot link" not in everything, everything
    assert f"127.0.0.1:{port}" in checked, checked


def test_a_missing_robot_fails_check_in_chinese(tmp_path) -> None:
    # `serve` keeps retrying a missing robot by design (it may be switched on later);
    # `check` is where a missing one is an answer.
    said = _refused(_main("check", "--lang", "zh", "--robot", "/dev/ttyNOPE", "--port",
                          str(free_port()), "--db", str(tmp_path / "t.db")))
    assert "/dev/ttyNOPE" in said, said


def test_an_unwritable_database_folder_is_refused_in_chinese(tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    db = str(blocker / "tasks.db")
    said = _refused(_main("serve", "--mode", "queue", "--lang", "zh", "--port", "0",
                          "--db", db))
    assert db in said and "[Errno" not in said, said
    said = _refused(_main("check", "--lang", "zh", "--port", str(free_port()), "--db", db))
    assert db in said, said


# -- the task database's refusals, in zh -------------------------------------------------
def _unusable_database(tmp_path, kind: str) -> str:
    import sqlite3

    from tasks.store import TaskStore

    path = tmp_path / "tasks.db"
    if kind == "not-a-database":
        path.write_text("hello\n" * 200, encoding="utf-8")
    elif kind == "foreign":
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER)")
            conn.commit()
    elif kind == "newer":
        store = TaskStore(str(path))
        store.open()
        store.close()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
            conn.commit()
    else:
        path.mkdir()
    return str(path)


@pytest.mark.parametrize(("kind", "serve_says", "check_says"), [
    ("not-a-database", "不是可用的任务数据库（文件不是数据库）", "（文件不是数据库）"),
    ("foreign", "不是机器人任务数据库", "不是机器人任务数据库"),
    ("newer", "结构版本 99", "结构版本 99"),
    ("directory", "不是可用的任务数据库（无法打开数据库文件）", "是目录"),
])
def test_a_database_that_cannot_be_used_is_refused_in_chinese(tmp_path, kind, serve_says,
                                                               check_says) -> None:
    db = _unusable_database(tmp_path, kind)
    said = _refused(_main("serve", "--mode", "queue", "--lang", "zh", "--port", "0",
                          "--robot", "sim", "--db", db))
    assert "无法启动" in said and db in said and serve_says in said, said
    said = _refused(_main("check", "--lang", "zh", "--host", "127.0.0.1", "--port",
                          str(free_port()), "--robot", "sim", "--db", db))
    assert db in said and check_says in said, said


def test_sqlites_own_words_are_translated_or_quoted_as_its_own() -> None:
    import errno
    import sqlite3

    from tasks.errors import StoreError

    known = StoreError("db_not_writable_read_only", path="/d/t.db", where="/d",
                       reason=sqlite3.OperationalError("attempt to write a readonly database"))
    assert known.text("zh") == \
        "/d/t.db: 任务数据库无法写入（试图写入只读的数据库；/d 位于只读文件系统）"
    assert str(known) == ("/d/t.db: the task database cannot be written (attempt to write "
                          "a readonly database; /d is on a read-only file system)")
    new = sqlite3.DatabaseError("something new in SQLite 3.99")
    unknown = StoreError("db_unusable", path="/d/t.db", reason=new)
    assert unknown.text("zh") == \
        '/d/t.db: 不是可用的任务数据库（SQLite 报告的错误："something new in SQLite 3.99"）'
    assert english_words(unknown.text("zh")) == []
    assert str(unknown) == "/d/t.db: not a usable task database (something new in SQLite 3.99)"
    folder = StoreError("db_cannot_create_directory", path="/d/t.db",
                        reason=PermissionError(errno.EACCES, "Permission denied"))
    assert folder.text("zh") == "/d/t.db: 无法创建目录：没有权限"


def test_a_write_that_fails_while_serving_is_explained_in_the_readers_language() -> None:
    import sqlite3

    from server.errors import from_task_error
    from tasks.errors import NotAccepted, StoreWriteError
    from tasks.reasons import pause_text

    full = sqlite3.OperationalError("database or disk is full")
    refused = NotAccepted("the task database cannot be written (database or disk is full)",
                          reason=full)
    reply = from_task_error(refused)
    assert reply.text("zh") == "任务未被接受：任务数据库无法写入（数据库或磁盘已满）"
    assert reply.text("en") == \
        "the task was not accepted: the task database cannot be written (database or disk is full)"
    odd = StoreWriteError("the task database cannot be written (new words)",
                          reason=sqlite3.OperationalError("new words"))
    assert odd.text("zh") == '更改未保存：任务数据库无法写入（SQLite 报告的错误："new words"）'
    assert str(odd) == "the task database cannot be written (new words)"  # the logs' words
    # A hold keeps the detail unrendered (JSON, as the store saves a hold's params), so it
    # is shown in the language of whoever reads it, after a restart too.
    params = json.loads(json.dumps({"task_id": "t1", "error": refused.params["detail"]}))
    held = pause_text("hold_result_not_saved", "zh", params)
    assert "数据库或磁盘已满" in held and english_words(held, ("t1",)) == [], held
    assert "(the task database cannot be written (database or disk is full))" in \
        pause_text("hold_result_not_saved", "en", params)
