"""`onajimi allow|deny add|remove|list`: dynamic list entries kept in the state store.

Adding and removing go through gateway/entries.py, the code path the administrator's
page uses too. Running gateways pick changes up within seconds, without a reload.
"""

from __future__ import annotations

import getpass
from typing import Any

from gateway import entries
from gateway.cli.common import parse_duration, print_json, settings_from, timestamp, with_store
from gateway.policy.lists import Role
from gateway.store.base import Store


def _who() -> str:
    """Who changed an entry, for the decision log's `admin` line."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return ""


def run(args: Any) -> int:
    role = Role(args.list)
    settings = settings_from(args)

    if args.action == "add":
        entries.validate(args.entry, role)  # before the store is opened
        ttl = parse_duration(args.ttl) if args.ttl else None

        async def add(store: Store) -> float | None:
            entry = await entries.add(
                store, role, args.entry, comment=args.comment or "", ttl=ttl, who=_who()
            )
            return entry.expires

        expires = with_store(settings, add)
        text = args.entry.strip()
        print(f"{role.value} {text}" + (f" until {timestamp(expires)}" if expires else ""))
        return 0

    if args.action == "remove":
        text = args.entry.strip()
        removed = with_store(settings, lambda store: entries.remove(store, role, text, who=_who()))
        if not removed:
            print(f"{role.value} {text}: no such entry")
            return 1
        print(f"removed {role.value} {text}")
        return 0

    listed = with_store(settings, lambda store: store.entries(role.value), read_only=True)
    if args.json:
        print_json(
            [
                {"entry": e.text, "comment": e.comment, "added": e.added, "expires": e.expires}
                for e in listed
            ]
        )
        return 0
    for e in listed:
        expires = f"expires {timestamp(e.expires)}" if e.expires else "permanent"
        comment = f"  # {e.comment}" if e.comment else ""
        print(f"{e.text}  (added {timestamp(e.added)}, {expires}){comment}")
    return 0
