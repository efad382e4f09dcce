"""The DNS list queries of one client, in parallel, on the gateway's own resolver.

Each list is one A query (`4.3.2.1.zen.spamhaus.org`), through `Resolver.lookup`: the
same cache and single-flight as the PTR lookups, so fifty sessions of one new host ask
each list once. The score (policy/dnsbl.py) is then kept per address for the lists' own
TTL, held within `dnsbl.min_ttl` and `dnsbl.max_ttl` (postscreen's defaults: 60 s and
1 h), so a returning client costs one dict lookup and no await. A list that did not
answer counts for nothing, and a score with such a gap is not kept: the next session
asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.policy import dnsbl
from gateway.policy.net import IPAddress
from gateway.resolver.cache import TTLCache
from gateway.resolver.resolver import AnswerKind, Lookup, Resolver


class DnsblLookups:
    def __init__(
        self,
        resolver: Resolver,
        cache_size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self._clock = clock
        self._scores: TTLCache[tuple[dnsbl.DnsblRules, dnsbl.Score]] = TTLCache(cache_size)

    def cached(self, address: IPAddress, rules: dnsbl.DnsblRules) -> dnsbl.Score | None:
        """The score of a recently seen address under these lists, without an await."""
        kept = self._scores.get(address, self._clock())
        if kept is None or kept[0] is not rules:  # a reload changed the lists
            return None
        return kept[1]

    def ask(self, address: IPAddress, rules: dnsbl.DnsblRules) -> dnsbl.Score | Asked:
        """The score at hand, or the lists' queries sent now (await `Asked.score()`):
        the caller goes on with its PTR lookup meanwhile, with no task in between."""
        cached = self.cached(address, rules)
        if cached is not None:
            return cached
        deadline = asyncio.get_running_loop().time() + self.resolver.timeout
        domains = rules.domains
        started = [
            self.resolver.start(dnsbl.query_name(address, d), "A", deadline) for d in domains
        ]
        return Asked(self, address, rules, domains, started)

    async def score(self, address: IPAddress, rules: dnsbl.DnsblRules) -> dnsbl.Score:
        asked = self.ask(address, rules)
        return asked if isinstance(asked, dnsbl.Score) else await asked.score()

    def _scored(
        self, address: IPAddress, rules: dnsbl.DnsblRules, domains: tuple[str, ...], found: list
    ) -> dnsbl.Score:
        answers: dict[str, tuple[str, ...] | None] = {}
        for domain, lookup in zip(domains, found, strict=True):
            if lookup.kind is AnswerKind.TEMPFAIL:
                answers[domain] = None
            else:
                answers[domain] = lookup.values if lookup.kind is AnswerKind.ANSWER else ()
        result = dnsbl.score(rules.sites, answers)
        if not result.failed:
            ttl = min(lookup.ttl for lookup in found)
            ttl = min(max(ttl, rules.min_ttl), rules.max_ttl)
            self._scores.put(address, (rules, result), ttl, self._clock())
        return result


class Asked:
    """The lists' queries for one client, on their way."""

    __slots__ = ("address", "domains", "lookups", "rules", "started")

    def __init__(self, lookups: DnsblLookups, address, rules, domains, started) -> None:
        self.lookups, self.address, self.rules = lookups, address, rules
        self.domains, self.started = domains, started

    async def score(self) -> dnsbl.Score:
        found: list[Lookup] = []
        for item in self.started:
            found.append(item if isinstance(item, Lookup) else await asyncio.shield(item))
        return self.lookups._scored(self.address, self.rules, self.domains, found)
