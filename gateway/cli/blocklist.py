"""`onajimi export-blocklist`: penalty box and deny-list addresses for the firewall."""

from __future__ import annotations

import sys
from typing import Any

from gateway.assembly import build_policy
from gateway.cli.common import settings_from, with_store
from gateway.policy.lists import EntryError, Role, parse_entry
from gateway.reports import blocklist, render_ipset, render_nft, render_plain
from gateway.store.base import Store


def run(args: Any) -> int:
    settings = settings_from(args)
    policy = build_policy(settings)

    async def gather(store: Store):
        now = store.clock()
        denied = [(network, None, "deny file") for network, _ in policy.deny.networks()]
        for entry in await store.entries(Role.DENY.value):
            try:
                parsed = parse_entry(entry.text, Role.DENY, "dynamic deny")
            except EntryError:
                continue
            if parsed is not None and parsed.network is not None:
                denied.append((parsed.network, entry.expires, "dynamic deny"))
        return blocklist(await store.scan("penalty:"), denied, now), now

    entries, now = with_store(settings, gather, read_only=True)
    if args.format == "nft":
        ports = {endpoint.port for endpoint in settings.listen.addresses}
        text = render_nft(entries, now, ports)
    elif args.format == "ipset":
        text = render_ipset(entries, now)
    else:
        text = render_plain(entries, now)
    sys.stdout.write(text)
    return 0
