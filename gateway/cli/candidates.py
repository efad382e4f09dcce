"""`onajimi candidates`: the S25R rescue list (and, with --impatient, the hammerers)."""

from __future__ import annotations

from typing import Any

from gateway.cli.common import parse_duration, print_json, settings_from, with_store
from gateway.reports import candidate_records, candidates, candidates_json, candidates_text
from gateway.store.base import Store


def run(args: Any) -> int:
    settings = settings_from(args)
    since = parse_duration(args.since) if args.since else None

    async def gather(store: Store):
        return candidates(
            await candidate_records(store),
            store.clock(),
            min_attempts=args.min_attempts,
            since=since,
            impatient=args.impatient,
            impatient_retries=settings.policy.impatient_retries,
        )

    groups = with_store(settings, gather, read_only=True)
    if args.json:
        print_json(candidates_json(groups, impatient=args.impatient))
    else:
        print(candidates_text(groups, impatient=args.impatient), end="")
    return 0
