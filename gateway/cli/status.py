"""`onajimi status`: what the store holds, and which store and config are in use."""

from __future__ import annotations

from typing import Any

from gateway.cli.common import print_json, print_table, settings_from, with_store
from gateway.store.base import Store

KINDS = ("pending", "familiar", "penalty", "tally")


async def _gather(store: Store) -> dict[str, Any]:
    counts = await store.counts()
    return {
        "records": {kind: counts.get(kind, 0) for kind in KINDS},
        "dynamic_allow": len(await store.entries("allow")),
        "dynamic_deny": len(await store.entries("deny")),
    }


def run(args: Any) -> int:
    settings = settings_from(args)
    info = with_store(settings, _gather, read_only=True)
    info = {"config": settings.source, "store": settings.store.url, **info}
    if args.json:
        print_json(info)
        return 0
    records = info["records"]
    print_table(
        [
            ("config", info["config"]),
            ("store", info["store"]),
            ("pending", str(records["pending"])),
            ("familiar", str(records["familiar"])),
            ("penalty", str(records["penalty"])),
            ("triplet tallies", str(records["tally"])),
            ("dynamic allow", str(info["dynamic_allow"])),
            ("dynamic deny", str(info["dynamic_deny"])),
        ]
    )
    return 0
