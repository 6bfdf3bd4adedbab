"""Does a reply fit the command in flight? Checked for every codec, before it counts.

A robot that is out of step with the host (still finishing an earlier command, or
one that queues commands, or a stray line) sends replies that look valid but belong
to another command: with no ids on the wire they would complete the wrong task with
another rack's bottles. The command table says what a command's replies must look
like (``ReplyRule``); ``FitCheck`` holds one command's rule and what it has seen,
and names the first line that cannot be this command's. No I/O, no locks: the reply
router calls it under the link's lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from i18n import message, t


@dataclass(frozen=True)
class ReplyRule:
    """What a command's progress items and result must look like.

    items_param: the list parameter the items answer, one item per member (e.g.
        ``positions``); item_field: the item's field naming that member (``position``).
    echoed: parameters an item repeats, which must then be the command's (``rack``).
    count_key: the result's count of the items (``scanned_count``); items_key: the
        result's list of them (``scanned_bottles``), when the robot sends one.
    """

    items_param: str | None = None
    item_field: str | None = None
    echoed: tuple[str, ...] = ()
    count_key: str | None = None
    items_key: str | None = None


def rules_from(rules: Mapping[str, ReplyRule | Mapping[str, Any]] | None
               ) -> dict[str, ReplyRule]:
    """Rules by command name, from ``ReplyRule``s or their fields as a mapping (the
    command table's ``reply_rules()``)."""
    out: dict[str, ReplyRule] = {}
    for name, rule in (rules or {}).items():
        if isinstance(rule, ReplyRule):
            out[name] = rule
        else:
            out[name] = ReplyRule(items_param=rule.get("items_param"),
                                  item_field=rule.get("item_field"),
                                  echoed=tuple(rule.get("echoed") or ()),
                                  count_key=rule.get("count_key"),
                                  items_key=rule.get("items_key"))
    return out


class FitCheck:
    """One command's replies against its rule. Each method returns why a reply does
    not fit, as ``i18n.message(...)`` (``english`` renders it for the transcript and
    the log; the task's failure shows it in the server's language), or None."""

    def __init__(self, rule: ReplyRule | None, params: dict[str, Any]) -> None:
        self.rule = rule
        self._asked: list[Any] | None = None
        if rule is not None and rule.items_param and rule.item_field:
            asked = params.get(rule.items_param)
            if isinstance(asked, list):
                self._asked = list(asked)
        self._seen: set[Any] = set()
        self._echoed = {name: params[name] for name in (rule.echoed if rule else ())
                        if name in params}

    @property
    def expected(self) -> int | None:
        """How many items the command asked for, when its rule says."""
        return len(self._asked) if self._asked is not None else None

    def item(self, item: dict[str, Any] | None) -> dict[str, Any] | None:
        """One progress item; remembered when it fits."""
        rule = self.rule
        if item is None or rule is None:
            return None
        for name, value in self._echoed.items():
            if name in item and item[name] != value:
                return message("wire.unfit.echoed", name=name, got=repr(item[name]),
                               asked=repr(value))
        if self._asked is None or rule.item_field is None:
            return None
        member = item.get(rule.item_field)
        if not _hashable(member) or member not in self._asked:
            return message("wire.unfit.not_asked", name=rule.item_field, got=repr(member),
                           asked=self._shown())
        if member in self._seen:
            return message("wire.unfit.twice", name=rule.item_field, got=repr(member))
        self._seen.add(member)
        return None

    def result(self, success: bool, data: dict[str, Any]) -> dict[str, Any] | None:
        """The command's successful result: its count and items must be the ones asked
        for, and the progress items seen must be all of them. A failure (the robot's
        ERR, an abort) ends the command early and is not checked."""
        rule, expected = self.rule, self.expected
        if not success or rule is None:
            return None
        if rule.items_key and isinstance(data.get(rule.items_key), list):
            for item in data[rule.items_key]:
                if isinstance(item, dict) and item.get(rule.item_field or "") not in self._seen:
                    why = self.item(item)
                    if why is not None:
                        return message("wire.unfit.result_item", key=rule.items_key,
                                       why=why)
        if expected is None:
            return None
        count = data.get(rule.count_key) if rule.count_key else None
        if count is not None and count != expected:
            return message("wire.unfit.count", key=rule.count_key, got=repr(count),
                           expected=expected)
        if self._seen and len(self._seen) != expected:
            return message("wire.unfit.early", seen=len(self._seen), expected=expected)
        return None

    def _shown(self) -> str:
        asked = self._asked or []
        text = ",".join(str(a) for a in asked[:12])
        return text + (",..." if len(asked) > 12 else "")


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def english(why: dict[str, Any]) -> str:
    """A reason made by ``i18n.message`` in English (transcripts and logs)."""
    return t(why["i18n"], "en", **why["params"])
