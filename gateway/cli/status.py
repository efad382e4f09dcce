"""`onajimi status`: what the store holds, which store and config are in use (and what
the store found, e.g. a Redis Cluster's nodes), and which gateways are running against
this store (from the heartbeats they write every 10 s)."""

from __future__ import annotations

import json
from typing import Any

from gateway.cli.common import print_json, print_table, settings_from, timestamp, with_store
from gateway.runtime import HEARTBEAT_PREFIX
from gateway.store import display_url
from gateway.store.base import Store

KINDS = ("pending", "familiar", "penalty", "tally")


async def _gather(store: Store) -> dict[str, Any]:
    counts = await store.counts()
    beats = await store.list_meta(HEARTBEAT_PREFIX)
    gateways = []
    for name, value in sorted(beats.items()):
        try:
            gateways.append(json.loads(value))
        except json.JSONDecodeError:
            gateways.append({"name": name})
    return {
        "store_detail": store.detail(),
        "records": {kind: counts.get(kind, 0) for kind in KINDS},
        "dynamic_allow": len(await store.entries("allow")),
        "dynamic_deny": len(await store.entries("deny")),
        "gateways": gateways,
    }


def _describe(gateway: dict[str, Any]) -> str:
    if "pid" not in gateway:
        return gateway.get("name", "?")
    listen = ", ".join(gateway.get("listen", [])) or "-"
    return (
        f"{gateway.get('host')} pid {gateway['pid']} (version {gateway.get('version')}), "
        f"listening on {listen}, up since {timestamp(gateway.get('started'))}, "
        f"{gateway.get('sessions', 0)} sessions"
    )


def run(args: Any) -> int:
    settings = settings_from(args)
    info = with_store(settings, _gather, read_only=True)
    info = {"config": settings.source, "store": display_url(settings.store.url), **info}
    if args.json:
        print_json(info)
        return 0
    records = info["records"]
    rows = [
        ("config", info["config"]),
        ("store", info["store"]),
        *([("", info["store_detail"])] if info["store_detail"] else []),
        ("pending", str(records["pending"])),
        ("familiar", str(records["familiar"])),
        ("penalty", str(records["penalty"])),
        ("triplet tallies", str(records["tally"])),
        ("dynamic allow", str(info["dynamic_allow"])),
        ("dynamic deny", str(info["dynamic_deny"])),
    ]
    gateways = info["gateways"]
    if not gateways:
        rows.append(("gateways", "none running against this store (no heartbeat in 30 s)"))
    for n, gateway in enumerate(gateways):
        rows.append(("gateways" if n == 0 else "", _describe(gateway)))
    print_table(rows)
    return 0
