"""The dashboard in Chinese and English: catalogues, language choice, the switch, server
messages in the chosen language, and Chinese glyphs that really render (no tofu).

Runs in the same headless Chromium as tests/test_dashboard.py (its fixtures), against
the real server and simulator. The glyph test needs a CJK font (Debian fonts-noto-cjk,
installed by .ci/run): without one it fails, on purpose.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests import test_dashboard as base
from tests.conftest import Client

# The browser fixtures of tests/test_dashboard.py (assigned, not imported, so that the
# test functions' parameters of the same name are what pytest fills in).
browser = base.browser
dashboard = base.dashboard
Dashboard = base.Dashboard
needs_browser = base.needs_browser
expect = base.expect
T = base.T

STATIC_DIR = base.STATIC_DIR
LANG_KEY = "robot-task-server.lang"
# The literal keys in the page's code and markup: 'web.x', "web.x" (data-i18n="web.x").
KEY_RE = re.compile(r"""['"](web\.[A-Za-z0-9_.]+)['"]""")


def catalogue(lang: str) -> dict[str, str]:
    with open(os.path.join(STATIC_DIR, f"i18n-{lang}.json"), encoding="utf-8") as fh:
        return json.load(fh)


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


ZH, EN = catalogue("zh"), catalogue("en")


# -- the catalogues (no browser needed) ---------------------------------------------------
def test_catalogues_match_each_other_and_the_code() -> None:
    assert set(ZH) == set(EN)
    assert len(EN) >= 100
    for key, text in EN.items():
        assert key.startswith("web."), key
        assert fields(text) == fields(ZH[key]), key
        # Placeholders are filled by name only: no positional {} and no format specs.
        for _, name, spec, conv in string.Formatter().parse(text):
            assert name is None or (re.fullmatch(r"[A-Za-z0-9_]+", name) and not spec
                                    and not conv), (key, name)
    used: set[str] = set()
    for name in os.listdir(STATIC_DIR):
        if name.endswith((".js", ".html")):
            with open(os.path.join(STATIC_DIR, name), encoding="utf-8") as fh:
                used |= set(KEY_RE.findall(fh.read()))
    assert used - set(EN) == set(), "used in the page but missing from the catalogues"
    assert set(EN) - used == set(), "in the catalogues but used nowhere"
    # The guide's status words for the operator; the JSON values stay English.
    assert [ZH[f"web.status.{s}"] for s in ("pending", "running", "completed", "failed",
                                             "cancelled")] == \
        ["等待中", "执行中", "已完成", "失败", "已取消"]


def test_catalogues_are_served_as_json(server: Any) -> None:
    for lang, expected in (("en", EN), ("zh", ZH)):
        r = requests.get(f"{server.url}/static/i18n-{lang}.json", timeout=10)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["ETag"]
        assert r.json() == expected


# -- in the browser ------------------------------------------------------------------------
def api_languages(tab: Dashboard, path: str = "") -> set[str | None]:
    """The Accept-Language of every API request the page made (static files aside)."""
    return {r.headers.get("accept-language") for r in tab.requests
            if "/static/" not in r.url and r.resource_type == "fetch" and path in r.url}


EXPECTED = {
    "zh-CN": {"html": "zh-CN", "title": "机器人任务服务器", "estop": "紧急停止",
              "pause": "继续队列", "banner": "队列已暂停", "label": "命令", "submit": "提交",
              "pending": "等待中", "completed": "已完成", "cancelled": "已取消",
              "just_now": "刚刚", "empty": "队列为空。", "ago": ["3 分钟前", "2 小时前"],
              "soon": "5 分钟后", "duration": ["12.5 秒", "3 分 20 秒"], "header": "状态"},
    "en-US": {"html": "en", "title": "Robot task server", "estop": "EMERGENCY STOP",
              "pause": "Resume queue", "banner": "Queue paused", "label": "Command",
              "submit": "Submit", "pending": "Pending", "completed": "Completed",
              "cancelled": "Cancelled", "just_now": "just now", "empty": "The queue is empty.",
              "ago": ["3 min ago", "2 h ago"], "soon": "in 5 min",
              "duration": ["12.5 s", "3 min 20 s"], "header": "Status"},
}


@needs_browser
@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_browser_locale_picks_the_language(
        locale: str, server: Any, client: Client,
        dashboard: Callable[..., Dashboard]) -> None:
    want = EXPECTED[locale]
    done = client.submit({"cmd_type": "PING"})
    client.wait_final(done)
    client.post("/queue/pause")
    waiting = client.submit()
    tab = dashboard(server, locale=locale)
    page = tab.open()

    assert page.evaluate("document.documentElement.lang") == want["html"]
    assert page.title().endswith(want["title"])  # after the server's name (--name)
    expect(page.locator("#estop-btn")).to_have_text(want["estop"])
    expect(page.locator("#pause-btn")).to_have_text(want["pause"], timeout=T)
    expect(page.locator("#banner .banner-label")).to_have_text(want["banner"])
    expect(page.locator('label[for="cmd-type"]')).to_have_text(want["label"])
    expect(page.locator("#submit-btn")).to_have_text(want["submit"])
    expect(page.locator("#history-panel th").first).to_have_text(want["header"])
    expect(tab.pending(waiting).locator(".badge")).to_have_text(want["pending"], timeout=T)
    row = tab.history_row(done)
    expect(row.locator(".badge")).to_have_text(want["completed"], timeout=T)
    expect(row.locator("td.ended")).to_contain_text(want["just_now"])
    # The filter lists the display labels; its values stay the JSON statuses.
    option = page.locator('#history-status option[value="cancelled"]')
    expect(option).to_have_text(want["cancelled"])

    # Times further away than a test can wait, through the page's own formatting.
    formatted = page.evaluate("""async () => {
        const v = await import('/static/views.js');
        const now = Date.now();
        return {ago: [v.relativeTime(now - 3 * 60e3, now), v.relativeTime(now - 2 * 3600e3, now)],
                soon: v.relativeTime(now + 5 * 60e3 + 500, now),
                duration: [v.formatDuration(12.5), v.formatDuration(200)]};
    }""")
    assert formatted == {k: want[k] for k in ("ago", "soon", "duration")}

    client.post("/queue/resume")
    expect(page.locator("#pending-empty")).to_have_text(want["empty"], timeout=T)
    lang = "zh" if locale.startswith("zh") else "en"
    assert api_languages(tab) == {lang}  # every API request said which language
    assert tab.errors == []  # a missing key or placeholder is logged as an error


@needs_browser
def test_switch_changes_the_language_live_and_survives_a_reload(
        server: Any, client: Client, dashboard: Callable[..., Dashboard]) -> None:
    done = client.submit({"cmd_type": "PING"})
    client.wait_final(done)
    tab = dashboard(server, locale="en-US")
    page = tab.open()
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#estop-btn")).to_have_text("EMERGENCY STOP")
    expect(tab.history_row(done).locator(".badge")).to_have_text("Completed", timeout=T)
    page.select_option("#cmd-type", "MOVE_TO")
    page.fill("#param-x", "12")
    page.evaluate("document.querySelector('#param-x').dataset.before = 'switch'")

    with page.expect_request(lambda r: r.url.endswith("/commands")) as commands:
        page.click('[data-lang="zh"]')
    # The command list is asked again, in Chinese (descriptions follow Accept-Language).
    assert commands.value.headers.get("accept-language") == "zh"
    expect(page.locator("#estop-btn")).to_have_text("紧急停止", timeout=T)
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    expect(page.locator("#conn")).to_have_text("实时")
    expect(page.locator("#robot-state")).to_have_text("机器人已连接")
    expect(tab.history_row(done).locator(".badge")).to_have_text("已完成")
    expect(page.locator('[data-lang="zh"]')).to_have_attribute("aria-pressed", "true")
    # The form is rebuilt with those descriptions, and what was typed stays.
    expect(page.locator("#param-x:not([data-before])")).to_have_count(1, timeout=T)
    expect(page.locator("#cmd-type")).to_have_value("MOVE_TO")
    expect(page.locator("#param-x")).to_have_value("12")
    served = requests.get(server.url + "/commands", timeout=10,
                          headers={"Accept-Language": "zh"}).json()["commands"]
    move = next(c for c in served if c["cmd_type"] == "MOVE_TO")
    expect(page.locator("#cmd-desc")).to_have_text(move["description"])
    assert page.evaluate("window.__sameDocument") is True  # no reload was needed

    page.reload()  # remembered by the browser
    tab.lang = "zh"
    tab.wait_live()
    expect(page.locator("#estop-btn")).to_have_text("紧急停止")
    assert page.evaluate(f"localStorage.getItem('{LANG_KEY}')") == "zh"

    page.click('[data-lang="en"]')
    expect(page.locator("#estop-btn")).to_have_text("EMERGENCY STOP", timeout=T)
    page.reload()
    tab.lang = "en"
    tab.wait_live()
    expect(page.locator("#submit-btn")).to_have_text("Submit")
    assert page.title().endswith("Robot task server")
    assert tab.errors == []


@needs_browser
def test_server_error_is_asked_for_and_shown_in_the_chosen_language(
        server: Any, dashboard: Callable[..., Dashboard]) -> None:
    # An English browser, switched to Chinese: the page's own header must win over
    # the browser's default Accept-Language (en-US).
    tab = dashboard(server, locale="en-US")
    page = tab.open()
    page.click('[data-lang="zh"]')
    expect(page.locator("#submit-btn")).to_have_text("提交", timeout=T)
    page.select_option("#cmd-type", "SCAN_QRCODE")
    page.fill("#param-rack", "A")
    page.fill("#param-positions", "0, 2")
    with page.expect_request(lambda r: r.method == "POST" and r.url == server.url + "/") as sent:
        page.click("#submit-btn")
    assert sent.value.headers.get("accept-language") == "zh"

    body = json.loads(sent.value.post_data or "{}")
    assert body == {"cmd_type": "SCAN_QRCODE", "params": {"rack": "A", "positions": [0, 2]}}
    # Whatever the server says in Chinese for this body is what the page shows.
    zh = requests.post(server.url + "/", json=body, timeout=10,
                       headers={"Accept-Language": "zh"}).json()
    assert zh["success"] is False and zh["field"] == "params.positions"
    error = page.locator('.field-error[data-error-for="params.positions"]')
    expect(error).to_have_text(zh["message"], timeout=T)
    expect(page.locator("#submit-result")).to_have_text(ZH["web.submit.see_field"])
    assert Client(server).status()["total_tasks"] == 0


@needs_browser
def test_chinese_text_really_renders(server: Any, dashboard: Callable[..., Dashboard]) -> None:
    tab = dashboard(server, locale="zh-CN")
    page = tab.open()

    def pictures(*texts: str) -> list[bytes]:
        # Copies of a real heading, same style and box: only their text differs.
        shots = []
        for i, text in enumerate(texts):
            page.evaluate("""([id, text]) => {
                const probe = document.querySelector('#running-title').cloneNode(false);
                probe.id = id;
                probe.textContent = text;
                document.querySelector('#running-panel').append(probe);
            }""", [f"glyph-probe-{i}", text])
            shots.append(page.locator(f"#glyph-probe-{i}").screenshot())
        page.evaluate("document.querySelectorAll('[id^=glyph-probe-]').forEach(e => e.remove())")
        return shots

    # The detector works: characters no font has are identical boxes (tofu) ...
    tofu_a, tofu_b = pictures("\U000f0001\U000f0002\U000f0003", "\U000f0004\U000f0005\U000f0006")
    assert tofu_a == tofu_b, "tofu boxes should look alike; the glyph check is meaningless"
    # ... and the page's Chinese words are not: each has glyphs of its own.
    first, second = ZH["web.status.pending"], ZH["web.status.completed"]
    assert len(first) == len(second)
    shot_a, shot_b = pictures(first, second)
    rendered = shot_a != shot_b and shot_a != tofu_a
    assert rendered, "Chinese renders as tofu: install a CJK font (apt-get install fonts-noto-cjk)"
    expect(page.locator("#estop-btn")).to_have_text("紧急停止")
    assert tab.errors == []


# -- the form's hints and the scanned-bottles table (issue 29) ------------------------------
@needs_browser
@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_a_range_is_said_once_and_item_columns_have_names(
        locale: str, make_server: Callable[..., Any],
        dashboard: Callable[..., Dashboard]) -> None:
    lang = "zh" if locale.startswith("zh") else "en"
    book = ZH if lang == "zh" else EN
    server = make_server(sim_speed=30, lang=lang)
    client = Client(server)
    served = {c["cmd_type"]: c for c in requests.get(
        server.url + "/commands", timeout=10, headers={"Accept-Language": lang}).json()["commands"]}
    tab = dashboard(server, locale=locale)
    page = tab.open()

    # The shipped description already gives the range: it is not added a second time.
    page.select_option("#cmd-type", "PICK")
    position = served["PICK"]["params"]["position"]
    assert "1-96" in position["description"]
    expect(page.locator("#param-position ~ .hint")).to_have_text(position["description"])
    # A description without it gets it once, from the schema's minimum and maximum.
    page.select_option("#cmd-type", "MOVE_TO")
    x = served["MOVE_TO"]["params"]["x"]
    hint = page.locator("#param-x ~ .hint")
    expect(hint).to_have_text(book["web.form.range"].format(
        description=x["description"], min=-1000, max=1000))
    assert page.evaluate("""async () => {
        const { statesRange } = await import('/static/form.js');
        return [statesRange('Rack position (1-96)', 1, 96), statesRange('架位（1–96）', 1, 96),
                statesRange('X (-1000 ~ 1000)', -1000, 1000), statesRange('X in mm', -1000, 1000),
                statesRange('Rack position (1-960)', 1, 96), statesRange('', 1, 96),
                statesRange('from 0.5-2.5 s', 0.5, 2.5), statesRange('10.5-2.5', 0.5, 2.5)];
    }""") == [True, True, True, False, False, False, True, False]

    # The bottles scanned so far: column heads in the page's language, data keys kept.
    task_id = client.submit({"cmd_type": "SCAN_QRCODE",
                             "params": {"rack": "A", "positions": list(range(1, 41))}})
    heads = page.locator("#running-items th")
    expect(page.locator("#running-items tbody tr").first).to_be_visible(timeout=T)
    expect(heads).to_have_text([book["web.item.position"], book["web.item.code"],
                                book["web.item.rack"]])
    assert heads.evaluate_all("hs => hs.map(h => h.dataset.key)") == ["position", "code", "rack"]
    if lang == "zh":
        assert not re.search(r"[A-Za-z]", "".join(heads.all_inner_texts()))
    expect(page.locator("#running-items tbody tr").first.locator("td").first).to_have_text("1")
    client.post(f"/task/{task_id}/cancel")
    client.wait_final(task_id)
    assert tab.errors == []
