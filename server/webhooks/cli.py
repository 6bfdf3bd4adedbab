"""`python main.py webhooks add|list|remove|test`: webhook subscriptions from the server
PC's command line (docs/webhooks.md), as `python main.py users ...` does principals
(server/users_cli.py, whose helpers these share).

They open the task database as a second connection, as SQLite's WAL mode allows, and
never take the server's instance lock: they work while the server runs, and its
dispatcher (server/webhooks/sender.py) sees a new or removed subscription within half a
second. Each change is audited as principal `console` (role admin) from address `local`,
in the change's own transaction (tasks/store/webhooks.py).

A new secret is the only line on standard output (``SECRET=$(python main.py webhooks add
...)``); what it is and that it will not be shown again go to standard error. `test`
sends a ping now, records the attempt in the delivery log (as `POST /webhooks/<id>/test`
does) and exits 0 only if the receiver answered 2xx.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from i18n import Translator, error_text
from server.users_cli import EXIT_FAILED, EXIT_OK, _audit, _leaf, _note, _open, _pad, _width
from settings import from_args, names

if TYPE_CHECKING:
    from settings import Settings
    from tasks.store import TaskStore

COMMANDS = ("webhooks",)
_COLUMNS = {"id": "webhooks.col_id", "url": "webhooks.col_url",
            "events": "webhooks.col_events", "state": "webhooks.col_state",
            "pending": "webhooks.col_pending", "last": "webhooks.col_last"}
# Why the sender (or an operator) disabled a subscription (tasks/store/webhooks.py).
_REASONS = {"gone": "webhooks.reason_gone",
            "retries_exhausted": "webhooks.reason_retries_exhausted",
            "by_operator": "webhooks.reason_by_operator"}
_ERROR_MAX = 60  # of the last error, in the table's cell


# -- flags ------------------------------------------------------------------------------
def add_parsers(sub: Any, tr: Translator) -> None:
    """Add `webhooks` (add, list, remove, test) to main.py's subparsers."""
    hooks = sub.add_parser("webhooks", help=tr("args.webhooks"),
                           description=tr("args.webhooks"))
    actions = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    new = _leaf(actions, "add", tr("args.webhooks_add"))
    new.add_argument("url", help="where to POST the events, e.g. http://192.168.1.50:9000/robot")
    new.add_argument("--events", help="comma-separated event types (default: all, *), "
                                      "e.g. task.completed,task.failed")
    new.add_argument("--description", help="a short note of what it is for")
    _leaf(actions, "list", tr("args.webhooks_list"))
    _leaf(actions, "remove", tr("args.webhooks_remove")).add_argument("id")
    test = _leaf(actions, "test", tr("args.webhooks_test"))
    test.add_argument("id")
    for leaf in (new, test):  # where deliveries may go: as the server's flag
        leaf.add_argument("--webhook-allow", type=names, metavar="HOST,CIDR,...",
                          help="where webhooks may be delivered (default the private and "
                               "loopback networks; link-local never; env ROBOT_WEBHOOK_ALLOW)")


# -- commands ---------------------------------------------------------------------------
def run(args: argparse.Namespace, db: str) -> int:
    """One `webhooks` command on the database ``db`` (a full path); its exit code."""
    tr = Translator(args.console_lang)
    action = args.webhooks_command
    settings = from_args(args, db=db)
    events, description = ["*"], getattr(args, "description", None)
    if action == "add":  # checked before the database is opened: a refusal stores nothing
        from tasks.store.webhooks import DESCRIPTION_MAX

        events = _events(args, tr)
        if description is not None and len(description) > DESCRIPTION_MAX:
            args.usage_error(tr("error.webhook_description_invalid", max=DESCRIPTION_MAX))
        if not _checked(args.url, settings, args, tr):
            return EXIT_FAILED
    store = _open(db, tr, create=action == "add")
    if store is None:
        return EXIT_FAILED
    try:
        if action == "list":
            return list_webhooks(store, tr)
        if action == "add":
            return add_webhook(store, args.url, events, description, tr)
        if action == "remove":
            return remove_webhook(store, args.id, tr)
        return ping_webhook(store, args.id, settings, tr)
    finally:
        store.close()


def add_webhook(store: TaskStore, url: str, events: list[str], description: str | None,
                tr: Translator) -> int:
    from server.webhooks.signing import new_secret
    from tasks.errors import TaskError
    from tasks.store.webhooks import WebhookStore

    secret = new_secret()
    try:
        hook = WebhookStore(store).add(url, events, description, secret,
                                       audit=_audit("webhook.add"))
    except TaskError as exc:  # a failed write
        _note(error_text(exc, tr.lang))
        return EXIT_FAILED
    _note(tr("webhooks.added", id=hook.id, url=hook.url, events=_event_list(hook.events, tr),
             path=store.path))
    print(secret, flush=True)
    _note(tr("webhooks.secret_once", id=hook.id))
    return EXIT_OK


def list_webhooks(store: TaskStore, tr: Translator) -> int:
    from tasks.store.webhooks import WebhookStore

    rows = WebhookStore(store).overview()  # never the secret
    if not rows:
        print(tr("webhooks.none"), flush=True)
        return EXIT_OK
    titles = [tr(key) for key in _COLUMNS.values()]
    cells = [[row["id"], row["url"], _event_list(row["events"], tr), _state(row, tr),
              str(row["pending"]), _last(row["last"], tr)] for row in rows]
    widths = [max(_width(line[i]) for line in [titles, *cells]) for i in range(len(_COLUMNS))]
    for line in [titles, *cells]:
        print("  ".join(_pad(cell, w) for cell, w in zip(line, widths, strict=True)).rstrip())
    sys.stdout.flush()
    return EXIT_OK


def remove_webhook(store: TaskStore, hook_id: str, tr: Translator) -> int:
    from tasks.errors import TaskError
    from tasks.store.webhooks import WebhookStore

    hooks = WebhookStore(store)
    try:
        hook = hooks.get(hook_id)
        hooks.remove(hook_id, audit=_audit("webhook.remove"))
    except TaskError as exc:  # webhook_not_found, a failed write
        _note(error_text(exc, tr.lang))
        return EXIT_FAILED
    print(tr("webhooks.removed", id=hook.id, url=hook.url), flush=True)
    return EXIT_OK


def ping_webhook(store: TaskStore, hook_id: str, settings: Settings, tr: Translator) -> int:
    """A ping now, to this subscription only (enabled or not), recorded as
    `POST /webhooks/<id>/test` records it; exit 0 if the receiver answered 2xx."""
    from server.webhooks.allow import AllowList
    from server.webhooks.sender import WebhookSender
    from tasks.errors import TaskError
    from tasks.queue.events import EventBus
    from tasks.store.webhooks import WebhookStore

    hooks = WebhookStore(store)
    # Never started: no threads; send() is one attempt and its record. Its event bus
    # is this process's own (the running server's dashboard does not hear of a 410 here).
    sender = WebhookSender(hooks, EventBus(), allow=AllowList(settings.webhook_allow),
                           schedule=settings.webhook_retry, timeout=settings.webhook_timeout,
                           base_url=lambda: "")
    try:
        hook = hooks.get(hook_id)
        _, outcome = sender.ping(hook, _audit("webhook.test"))
    except TaskError as exc:  # webhook_not_found, a failed write
        _note(error_text(exc, tr.lang))
        return EXIT_FAILED
    if outcome.ok:
        print(tr("webhooks.test_ok", url=hook.url, code=outcome.status_code,
                 ms=outcome.duration_ms), flush=True)
        return EXIT_OK
    print(tr("webhooks.test_failed", url=hook.url, error=outcome.error or "?",
             ms=outcome.duration_ms), flush=True)
    return EXIT_FAILED


# -- helpers ----------------------------------------------------------------------------
def _events(args: argparse.Namespace, tr: Translator) -> list[str]:
    """--events as a list, each once; all (``*``) by default; a usage error (exit 2)
    naming the known types if one is unknown."""
    from tasks.store.outbox import EVENT_TYPES
    from tasks.store.webhooks import subscribed

    given = getattr(args, "events", None)
    events = subscribed(["*"] if given is None else list(names(given)))
    if events is None:
        args.usage_error(tr("error.webhook_events_invalid", events=repr(given)[:200],
                            known=", ".join(("*", *EVENT_TYPES))))
    assert events is not None  # usage_error exits
    return events


def _checked(url: str, settings: Settings, args: argparse.Namespace, tr: Translator) -> bool:
    """Is the URL one deliveries may go to? A malformed one is a usage error (exit 2);
    one outside --webhook-allow is said on stderr (False: exit 1), nothing stored."""
    from server.webhooks.allow import AllowList, Refused

    try:
        AllowList(settings.webhook_allow).check(url)
    except Refused as exc:
        if exc.code == "webhook_url_invalid":
            args.usage_error(exc.text(tr.lang))
        _note(exc.text(tr.lang))
        return False
    return True


def _event_list(events: Any, tr: Translator) -> str:
    return tr("webhooks.all_events") if "*" in events else ",".join(events)


def _state(row: dict[str, Any], tr: Translator) -> str:
    if row["enabled"]:
        return tr("webhooks.enabled")
    reason = row["disabled_reason"]
    key = _REASONS.get(reason or "")
    return tr("webhooks.disabled", reason=tr(key) if key else reason or "-")


def _last(last: dict[str, Any] | None, tr: Translator) -> str:
    if last is None:
        return "-"
    if last["ok"]:
        return tr("webhooks.last_ok", code=last["status_code"], time=last["time"])
    error = str(last["error"] or last["status_code"] or "?")
    if len(error) > _ERROR_MAX:
        error = error[:_ERROR_MAX - 1] + "…"
    return tr("webhooks.last_failed", error=error, time=last["time"])
