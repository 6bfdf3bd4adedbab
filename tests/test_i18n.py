"""The message catalogues are complete: every key used exists in every language, every
key exists for a reason, and both languages fill the same placeholders.

Python and the dashboard use one format (flat JSON objects, ``{name}`` placeholders);
keys are whole string literals in the source, which is what lets this test find them.
"""

from __future__ import annotations

import ast
import json
import os
import re
import string

import pytest

import i18n
from tests.test_layout import PROJECT, module_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATIC = os.path.join(ROOT, "server", "static")
ERROR_CLASSES = {"ApiError", "CommandError", "TaskError", "StoreError"}
CODE_PREFIXES = ("error.", "info.")
# Codes whose message is the guide's fixed text, never a catalogue entry.
GUIDE_FIXED_CODES = {"queued"}
WEB_KEY = re.compile(r"""["'`](web\.[A-Za-z0-9_.]+)["'`]""")


def python_files() -> list[str]:
    """Every module of the project (the one list of it: tests/test_layout.py's PROJECT)."""
    return sorted(module_files(ROOT, PROJECT).values())


def python_literals() -> tuple[set[str], set[str]]:
    """All string constants of the Python sources, and the codes given to errors."""
    literals: set[str] = set()
    codes: set[str] = set()
    for path in python_files():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
            elif isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in ERROR_CLASSES and node.args and _is_str(node.args[0]):
                    codes.add(node.args[0].value)
                codes.update(kw.value.value for kw in node.keywords
                             if kw.arg == "code" and _is_str(kw.value))
            elif isinstance(node, ast.Dict):
                codes.update(v.value for k, v in zip(node.keys, node.values, strict=True)
                             if k is not None and _is_str(k) and k.value == "code"
                             and _is_str(v))
    return literals, codes - GUIDE_FIXED_CODES


def _is_str(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def web_catalogue(lang: str) -> dict[str, str]:
    with open(os.path.join(STATIC, f"i18n-{lang}.json"), encoding="utf-8") as fh:
        return json.load(fh)


def web_keys_used() -> set[str]:
    used: set[str] = set()
    for name in sorted(os.listdir(STATIC)):
        if name.endswith((".js", ".html")):
            with open(os.path.join(STATIC, name), encoding="utf-8") as fh:
                used.update(WEB_KEY.findall(fh.read()))
    return used


CATALOGUES = {
    "python": {lang: i18n.catalogue(lang) for lang in i18n.LANGS},
    "dashboard": {lang: web_catalogue(lang) for lang in i18n.LANGS},
}


@pytest.mark.parametrize("kind", sorted(CATALOGUES))
def test_every_language_has_the_same_keys(kind: str) -> None:
    books = CATALOGUES[kind]
    english = set(books["en"])
    assert english, f"the {kind} catalogue is empty"
    for lang, book in books.items():
        assert not english - set(book), f"{kind}/{lang} lacks {sorted(english - set(book))}"
        assert not set(book) - english, f"{kind}/{lang} has extra {sorted(set(book) - english)}"


@pytest.mark.parametrize("kind", sorted(CATALOGUES))
def test_placeholders_agree_and_are_named(kind: str) -> None:
    books = CATALOGUES[kind]
    formatter = string.Formatter()
    for key, english in books["en"].items():
        for lang, book in books.items():
            text = book.get(key, "")
            for _, name, spec, conversion in formatter.parse(text):
                if name is not None:
                    assert name.isidentifier(), f"{lang} {key}: placeholder {{{name}}}"
                    assert not spec and not conversion, f"{lang} {key}: format spec in {text!r}"
            assert i18n.placeholders(text) == i18n.placeholders(english), \
                f"{key}: {lang} fills {i18n.placeholders(text)}, en {i18n.placeholders(english)}"
            assert text.strip(), f"{lang} {key} is empty"


def test_chinese_catalogues_are_chinese() -> None:
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for kind, books in CATALOGUES.items():
        untranslated = [k for k, text in books["zh"].items()
                        if not cjk.search(text) and text == books["en"][k] and len(text) > 3]
        # Words like "JSON" or a bare placeholder may stay; whole sentences may not.
        assert len(untranslated) <= max(3, len(books["zh"]) // 50), \
            f"{kind}: zh texts identical to English: {untranslated[:10]}"


def test_python_keys_used_exist_and_every_key_is_used() -> None:
    book = CATALOGUES["python"]["en"]
    literals, codes = python_literals()
    prefixes = {key.split(".", 1)[0] + "." for key in book}
    looks_like_key = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
    missing = sorted(s for s in literals
                     if looks_like_key.match(s) and s.startswith(tuple(prefixes))
                     and s not in book)
    assert not missing, f"keys used in Python but in no catalogue: {missing}"
    no_text = sorted(c for c in codes if not any(p + c in book for p in CODE_PREFIXES))
    assert not no_text, f"codes without an error.<code> or info.<code> text: {no_text}"
    unused = sorted(k for k in book if k not in literals and not (
        k.startswith(CODE_PREFIXES) and k.split(".", 1)[1] in literals))
    assert not unused, f"catalogue keys used nowhere: {unused}"


def test_dashboard_keys_used_exist_and_every_key_is_used() -> None:
    book = CATALOGUES["dashboard"]["en"]
    used = web_keys_used()
    assert not sorted(used - set(book)), f"missing: {sorted(used - set(book))}"
    assert not sorted(set(book) - used), f"used nowhere: {sorted(set(book) - used)}"


def test_a_key_defined_twice_is_refused(tmp_path) -> None:
    (tmp_path / "a.json").write_text('{"x.y": "one"}', encoding="utf-8")
    (tmp_path / "b.json").write_text('{"x.y": "two"}', encoding="utf-8")
    with pytest.raises(i18n.CatalogueError, match="x.y is defined twice"):
        i18n.load_dir(str(tmp_path))


def test_strict_mode_raises_on_a_missing_key_and_placeholder(monkeypatch) -> None:
    monkeypatch.setattr(i18n, "strict", True)
    with pytest.raises(KeyError):
        i18n.t("no.such.key", "zh")
    key = next(k for k, text in CATALOGUES["python"]["en"].items() if i18n.placeholders(text))
    with pytest.raises(KeyError):
        i18n.t(key, "en")  # its placeholders not given
    monkeypatch.setattr(i18n, "strict", False)
    assert i18n.t("no.such.key", "zh") == "no.such.key"  # the console never dies of it


def test_a_language_without_a_catalogue_falls_back_to_english() -> None:
    key = next(k for k, text in CATALOGUES["python"]["en"].items() if not i18n.placeholders(text))
    assert i18n.t(key, "fr") == i18n.t(key, "en")
