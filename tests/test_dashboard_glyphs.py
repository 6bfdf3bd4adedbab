"""Every symbol the dashboard can show has a glyph on every lab PC: no tofu boxes.

The page loads no web fonts, so each character must be in a font the lab PC already has:
on Debian the ones the docs install (DejaVu Sans, the default, and Noto Sans CJK SC from
fonts-noto-cjk), on Windows its default fonts (Segoe UI, Segoe UI Symbol, Microsoft YaHei,
SimSun). Issue 29: the paused banner's U+23F8 was in none of Debian's, so Chromium drew a
box. The characters are read from the page's own files (CSS `content`, JS strings, HTML,
both catalogues, escapes decoded) and from the server texts the page displays; each must
be

- in WINDOWS_SAFE below (a symbol) or a CJK character (Microsoft YaHei and SimSun have
  them): a new symbol outside that list fails here until someone checks Windows has it;
- in DejaVu Sans or Noto Sans CJK SC, by fontconfig's own character sets (fc-list);
- drawn by Chromium as a glyph, not as the box a character no font has (screenshots).

Needs fontconfig (fc-list) and the fonts .ci/run installs; the browser part needs
Chromium and Playwright like tests/test_dashboard.py.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest

from tests import test_dashboard as base
from tests.conftest import ROOT, Client

browser = base.browser
dashboard = base.dashboard
Dashboard = base.Dashboard
needs_browser = base.needs_browser
expect = base.expect
T = base.T
STATIC_DIR = base.STATIC_DIR

# The symbols the page may use, each with the Windows default font that has it (from the
# fonts' documented coverage, Windows 7 and later; not verified on a Windows machine here);
# anything added must be checked against that font's character set first. U+23F8 (pause)
# is deliberately absent: Segoe UI Symbol lacks it before Windows 10 and Debian's fonts
# lack it altogether.
WINDOWS_SAFE = {
    "\u00a0": "Segoe UI",  # no-break space
    "\u00b0": "Segoe UI",  # ° degree
    "\u00b1": "Segoe UI",  # ± plus-minus
    "\u00b5": "Segoe UI",  # µ micro
    "\u00b7": "Segoe UI",  # · middle dot (transcript note, time · ETA)
    "\u00d7": "Segoe UI",  # × multiplication sign
    "\u2013": "Segoe UI",  # – en dash (ranges)
    "\u2014": "Segoe UI",  # — em dash (banner reason, empty cells)
    "\u2018": "Segoe UI",  # ‘ quotation marks (a robot's words quoted in Chinese)
    "\u2019": "Segoe UI",  # ’
    "\u201c": "Segoe UI",  # “
    "\u201d": "Segoe UI",  # ”
    "\u2026": "Segoe UI",  # … ellipsis (loading)
    "\u2190": "Segoe UI Symbol",  # ← newer page, robot -> host
    "\u2192": "Segoe UI Symbol",  # → older page, host -> robot
    "\u2298": "Segoe UI Symbol",  # ⊘ cancelled
    "\u25b6": "Segoe UI Symbol",  # ▶ running
    "\u25cb": "Segoe UI Symbol",  # ○ pending
    "\u25cf": "Segoe UI Symbol",  # ● connected
    "\u26a0": "Segoe UI Symbol",  # ⚠ store alert, field error
    "\u2713": "Segoe UI Symbol",  # ✓ completed
    "\u2715": "Segoe UI Symbol",  # ✕ failed, disconnected
}
# What Debian has once the docs' fonts are installed (fonts-dejavu-core comes with
# fontconfig; fonts-noto-cjk is installed by .ci/run and named in docs/dashboard.md).
DEBIAN_FAMILIES = ("DejaVu Sans", "Noto Sans CJK SC")
# Characters no font has (Supplementary Private Use Area-A): what a tofu box looks like.
NO_FONT = "\U000f0001"
PAUSE = "\u23f8"  # the box of issue 29

# The server's texts the page shows as they come: error messages, pause reasons, task
# results, robot link reasons (every catalogue in i18n/<lang>/ but the console's) and
# command descriptions (commands.json).
SERVER_TEXTS = sorted(os.path.join(ROOT, "i18n", lang, name) for lang in ("en", "zh")
                      for name in os.listdir(os.path.join(ROOT, "i18n", lang))
                      if name.endswith(".json") and name != "console.json")
COMMANDS_FILE = os.path.join(ROOT, "tasks", "commands", "commands.json")

FC_MISSING = "" if shutil.which("fc-list") else "no fc-list (apt-get install fontconfig)"
needs_fontconfig = pytest.mark.skipif(bool(FC_MISSING), reason=FC_MISSING)


def is_cjk(char: str) -> bool:
    code = ord(char)
    return (0x3000 <= code <= 0x303F or 0x4E00 <= code <= 0x9FFF or 0xFF00 <= code <= 0xFFEF
            or 0x3400 <= code <= 0x4DBF)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _decoded(name: str, text: str) -> str:
    """The file's text plus what its escapes stand for (\\2713 in CSS, \\u2713 in JS,
    &check; in HTML): a symbol written as an escape is still shown."""
    extra: list[str] = []
    if name.endswith(".css"):
        extra += [chr(int(h, 16)) for h in re.findall(r"\\([0-9a-fA-F]{1,6})", text)]
    if name.endswith((".js", ".json")):
        extra += [chr(int(h, 16)) for h in re.findall(r"\\u\{([0-9a-fA-F]{1,6})\}", text)]
        extra += [chr(int(h, 16)) for h in re.findall(r"\\u([0-9a-fA-F]{4})", text)]
        extra += [chr(int(h, 16)) for h in re.findall(r"\\x([0-9a-fA-F]{2})", text)]
    if name.endswith((".html", ".svg", ".js")):
        extra.append(html.unescape(text))
    return text + "".join(extra)


@functools.cache
def shown_characters() -> dict[str, set[str]]:
    """Every non-ASCII character the page can show, with the files it comes from."""
    found: dict[str, set[str]] = {}

    def add(text: str, where: str) -> None:
        for char in text:
            if ord(char) > 127 and unicodedata.category(char) not in ("Cc", "Cf"):
                found.setdefault(char, set()).add(where)

    for name in sorted(os.listdir(STATIC_DIR)):
        with open(os.path.join(STATIC_DIR, name), encoding="utf-8") as fh:
            text = fh.read()
        add(_decoded(name, text), name)
    for path in SERVER_TEXTS:
        with open(path, encoding="utf-8") as fh:
            add("".join(_strings(json.load(fh))), os.path.relpath(path, ROOT))
    with open(COMMANDS_FILE, encoding="utf-8") as fh:
        add("".join(_strings(json.load(fh))), os.path.relpath(COMMANDS_FILE, ROOT))
    return found


def symbols() -> list[str]:
    return sorted(c for c in shown_characters() if not is_cjk(c))


def _ranges(charset: str) -> set[int]:
    codes: set[int] = set()
    for part in charset.split():
        low, _, high = part.partition("-")
        codes.update(range(int(low, 16), int(high or low, 16) + 1))
    return codes


@functools.cache
def debian_coverage() -> dict[str, set[int]]:
    """The code points each of DEBIAN_FAMILIES has, from fontconfig (all its faces)."""
    cover: dict[str, set[int]] = {}
    for family in DEBIAN_FAMILIES:
        out = subprocess.run(["fc-list", "-f", "%{charset}\n", f":family={family}"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        cover[family] = set().union(*(_ranges(line) for line in out.splitlines()))
    return cover


# -- the files (no browser) ------------------------------------------------------------
def test_the_collector_sees_escapes_and_entities() -> None:
    # What the page files use today is found (the test would be empty otherwise) ...
    found = shown_characters()
    assert {"\u2713", "\u2715", "\u26a0", "\u2190"} <= set(found)
    assert "style.css" in found["\u2713"] and "index.html" in found["\u2190"]  # &larr;
    # ... and a symbol written as an escape counts as much as a literal one.
    assert set(_decoded("a.css", r'x::before { content: "\23F8 "; }')) >= {PAUSE}
    assert PAUSE in _decoded("a.js", r"const s = '\u23f8';")
    assert PAUSE in _decoded("a.js", r"const s = '\u{23F8}';")
    assert PAUSE in _decoded("a.html", "<b>&#x23F8;</b>")


def test_every_symbol_is_in_a_windows_default_font() -> None:
    outside = {f"U+{ord(c):04X} {unicodedata.name(c, '?')}": sorted(shown_characters()[c])
               for c in symbols() if c not in WINDOWS_SAFE}
    assert not outside, ("symbols no default Windows font is known to have (draw them in "
                         f"CSS, or check the fonts and add them to WINDOWS_SAFE): {outside}")
    assert PAUSE not in shown_characters()


@needs_fontconfig
def test_every_character_is_in_debians_fonts() -> None:
    cover = debian_coverage()
    assert all(cover.values()), f"a font is missing (.ci/run installs them): {cover.keys()}"
    # The check can fail: U+23F8 is in none of them (issue 29) and ✓ is in DejaVu Sans.
    assert not any(ord(PAUSE) in codes for codes in cover.values())
    assert ord("\u2713") in cover["DejaVu Sans"]
    everything = set().union(*cover.values())
    missing = {f"U+{ord(c):04X} {unicodedata.name(c, '?')}": sorted(where)
               for c, where in shown_characters().items() if ord(c) not in everything}
    assert not missing, f"characters in no font Debian's docs install: {missing}"


# -- in the browser --------------------------------------------------------------------
def _pictures(page: Any, texts: list[str], anchor: str) -> list[bytes]:
    """Each text drawn in a copy of `anchor` (same font and size), as a screenshot. One
    probe at a time at the same whole-pixel spot: the same box, pixel for pixel."""
    shots = []
    for text in texts:
        page.evaluate("""([anchor, text]) => {
            const probe = document.querySelector(anchor).cloneNode(false);
            probe.id = 'glyph-probe';
            probe.removeAttribute('data-i18n');
            probe.textContent = text;
            Object.assign(probe.style, {position: 'fixed', left: '20px', top: '20px',
                                        margin: '0', zIndex: '1000', background: '#fff'});
            document.body.append(probe);
        }""", [anchor, text])
        shots.append(page.locator("#glyph-probe").screenshot())
        page.evaluate("document.querySelector('#glyph-probe').remove()")
    return shots


@needs_browser
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_chromium_draws_every_symbol(locale: str, server: Any,
                                     dashboard: Callable[..., Dashboard]) -> None:
    page = dashboard(server, locale=locale).open()
    # Bold and regular faces (badges are bold) each fall back on their own.
    for anchor in ("#running-title", "#running .empty"):
        tofu, other_tofu, pause, *drawn = _pictures(
            page, [NO_FONT, "\U000f0002", PAUSE, *symbols()], anchor)
        assert tofu == other_tofu, "boxes should look alike; the check would mean nothing"
        if not FC_MISSING and not any(ord(PAUSE) in c for c in debian_coverage().values()):
            assert pause == tofu, "U+23F8 is in no font here, yet not drawn as a box"
        boxes = [f"U+{ord(c):04X}" for c, shot in zip(symbols(), drawn, strict=True)
                 if shot == tofu]
        assert not boxes, f"drawn as tofu boxes under {anchor} ({locale}): {boxes}"


@needs_browser
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_the_paused_page_shows_no_symbol_outside_the_list(
        locale: str, server: Any, client: Client,
        dashboard: Callable[..., Dashboard]) -> None:
    done = client.submit({"cmd_type": "PING"})
    client.wait_final(done)
    client.post("/queue/pause")
    tab = dashboard(server, locale=locale)
    page = tab.open()
    banner = page.locator("#banner .banner-label")
    expect(banner).to_be_visible(timeout=T)
    expect(tab.history_row(done).locator(".badge")).to_be_visible(timeout=T)
    # The store alert and every status badge, so that each ::before is computed.
    page.evaluate("""() => {
        document.querySelector('#store-alert').hidden = false;
        for (const s of ['pending', 'running', 'completed', 'failed', 'cancelled']) {
            const b = document.createElement('span');
            b.className = `badge status-${s}`;
            b.textContent = s;
            document.querySelector('#running-panel').append(b);
        }
        for (const s of ['ok', 'bad', 'unknown']) {
            const b = document.createElement('span');
            b.className = `badge state-${s}`;
            document.querySelector('#running-panel').append(b);
        }
        const err = document.querySelector('.field-error');
        if (err) err.textContent = 'x';
    }""")
    generated = page.evaluate("""() => {
        const out = [];
        for (const el of document.querySelectorAll('*')) {
            for (const pseudo of ['::before', '::after', '::marker']) {
                const c = getComputedStyle(el, pseudo).content;
                if (c && c !== 'none' && c !== 'normal') out.push(c);
            }
        }
        return out;
    }""")
    text = page.evaluate("document.body.innerText") + "".join(generated)
    assert "\u2713" in text  # the scan sees the badges' markers
    unchecked = sorted({c for c in text if ord(c) > 127 and not is_cjk(c)
                        and c not in WINDOWS_SAFE})
    assert not unchecked, f"shown but not in WINDOWS_SAFE: {unchecked}"
    assert not (set(text) - set(shown_characters()) - set(map(chr, range(128)))
                - {c for c in text if is_cjk(c)}), "shown but not found in the files"

    # The pause sign is drawn with borders, not a character: visible, and no text.
    sign = page.evaluate("""() => {
        const s = getComputedStyle(document.querySelector('#banner .banner-label'), '::before');
        return {content: s.content, width: parseFloat(s.width), left: parseFloat(s.borderLeftWidth),
                right: parseFloat(s.borderRightWidth)};
    }""")
    assert sign["content"] == '""'
    assert sign["width"] > 0 and sign["left"] > 0 and sign["right"] > 0
    assert tab.errors == []
