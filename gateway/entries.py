"""Dynamic allow/deny entries: the one code path that adds and removes them.

`onajimi allow|deny add|remove` and the administrator's page both call these, so an
entry the page accepts is exactly one the command line would accept, stored the same
way. Entries use the list-file syntax (address, network, domain, /regex/) and are
checked by the list parser before they are stored, so a running gateway never meets a
bad one. Every change is written to the decision log (`admin` lines) with who made it
and how:
the log is where an operator looks for "why does this host pass now?".

It owns validation, the store calls and the log line; it does not print, parse
arguments or render pages (cli/entries.py and web/admin.py do).
"""

from __future__ import annotations

from gateway import logs
from gateway.errors import UserError
from gateway.policy.lists import EntryError, Role, parse_entry
from gateway.store.base import DynamicEntry, Store

MAX_COMMENT = 200  # a comment is a note, not a document; longer ones are cut


def validate(text: str, role: Role) -> str:
    """The entry as it will be stored, or UserError saying what is wrong with it."""
    entry = text.strip()
    if not entry or entry.startswith("#") or any(c in entry for c in "\r\n"):
        raise UserError(f"{text!r} is not a list entry")
    try:
        parsed = parse_entry(entry, role, "command line")
    except EntryError as exc:
        raise UserError(f"{role.value} entry: {exc}") from None
    if parsed is None or parsed.entry.text != entry:
        raise UserError(f"{entry!r}: give the entry alone, without an action")
    return entry


def _clean_comment(comment: str) -> str:
    """One line: a comment is shown in lists and logs, where a newline could forge one."""
    return " ".join(comment.split())[:MAX_COMMENT]


async def add(
    store: Store,
    role: Role,
    text: str,
    *,
    comment: str = "",
    ttl: float | None = None,
    who: str = "",
    via: str = "cli",
) -> DynamicEntry:
    """Validate and store an entry (replacing one with the same text); `ttl` None or 0:
    until removed. Running gateways pick it up within seconds (the store's generation)."""
    entry_text = validate(text, role)
    if ttl is not None and ttl < 0:
        raise UserError(f"ttl must not be negative, got {ttl:g}")
    now = store.clock()
    entry = DynamicEntry(entry_text, _clean_comment(comment), now, now + ttl if ttl else None)
    await store.add_entry(role.value, entry)
    _log(who, via, f"{role.value}_add", entry_text, comment=entry.comment, expires=entry.expires)
    return entry


async def remove(store: Store, role: Role, text: str, *, who: str = "", via: str = "cli") -> bool:
    """Remove an entry; False when there was none (nothing is logged then)."""
    entry_text = text.strip()
    removed = await store.remove_entry(role.value, entry_text)
    if removed:
        _log(who, via, f"{role.value}_remove", entry_text)
    return removed


def _log(who: str, via: str, change: str, entry: str, **fields: object) -> None:
    """`admin who=alice via="web 127.0.0.1" change=allow_add entry=... comment=...
    expires=...` in the decision log, beside the decisions the change will alter. `who` is
    the person (the login's name, the CLI's user), `via` the door they came through."""
    line = {"who": who, "via": via, "change": change, "entry": entry}
    line.update({k: "" if v is None else v for k, v in fields.items()})
    logs.emit(logs.decision_log, "admin", line)
