"""`onajimi allow|deny add|remove|list`: dynamic list entries kept in the state store.

Entries use the list-file syntax (address, network, domain, /regex/) and are checked by
the same parser before they are stored, so a running gateway never meets a bad one.
Running gateways pick changes up within seconds, without a reload.
"""

from __future__ import annotations

from typing import Any

from gateway.cli.common import parse_duration, print_json, settings_from, timestamp, with_store
from gateway.errors import UserError
from gateway.policy.lists import EntryError, Role, parse_entry
from gateway.store.base import DynamicEntry, Store


def _validate(text: str, role: Role) -> str:
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


def run(args: Any) -> int:
    role = Role(args.list)
    settings = settings_from(args)

    if args.action == "add":
        text = _validate(args.entry, role)
        ttl = parse_duration(args.ttl) if args.ttl else None

        async def add(store: Store) -> float | None:
            now = store.clock()
            expires = now + ttl if ttl else None
            await store.add_entry(role.value, DynamicEntry(text, args.comment or "", now, expires))
            return expires

        expires = with_store(settings, add)
        print(f"{role.value} {text}" + (f" until {timestamp(expires)}" if expires else ""))
        return 0

    if args.action == "remove":
        text = args.entry.strip()
        removed = with_store(settings, lambda store: store.remove_entry(role.value, text))
        if not removed:
            print(f"{role.value} {text}: no such entry")
            return 1
        print(f"removed {role.value} {text}")
        return 0

    entries = with_store(settings, lambda store: store.entries(role.value), read_only=True)
    if args.json:
        print_json(
            [
                {"entry": e.text, "comment": e.comment, "added": e.added, "expires": e.expires}
                for e in entries
            ]
        )
        return 0
    for e in entries:
        expires = f"expires {timestamp(e.expires)}" if e.expires else "permanent"
        comment = f"  # {e.comment}" if e.comment else ""
        print(f"{e.text}  (added {timestamp(e.added)}, {expires}){comment}")
    return 0
