"""SPF (RFC 7208) through the gateway's own resolver: pyspf evaluates, we answer its DNS.

pyspf (the reference implementation, which ships the RFC 7208 test suite) is
synchronous and asks DNS through its module-level `DNSLookup`. Rather than a thread per
check, it runs here on the event loop against the answers known so far: a lookup not
asked yet raises `_Unknown`, the evaluation stops, the name is asked through the
gateway's Resolver (its cache, its timeouts, its single flight) and the evaluation
starts again from the beginning with one answer more. Evaluating a record costs
microseconds, and RFC 7208 caps a check at ten DNS-querying mechanisms and two void
lookups, so it starts over a few dozen times at most; and a check only happens where it
can matter (a deferred message seen again from another address, policy/proof.py), never
on the first-contact path.

What pyspf does not report is how wide the network was that a pass went through (its
`mechanism` is the top-level one: `include:_spf.google.com`), so `_Query` watches its
matches: the prefix length of the `a`, `mx`, `ip4` or `ip6` mechanism that decided, at
whatever depth of includes and redirects. A pass from `all`, `ptr` or `exists` has none.

A temporary DNS failure, the whole check taking longer than its budget, or a lookup
loop are `temperror`: no proof, never an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import spf as pyspf

from gateway.policy.facts import SPF
from gateway.resolver.cache import TTLCache
from gateway.resolver.resolver import AnswerKind, Lookup, Resolver

RESULT_TTL = 600.0  # a check's result is reused this long (per domain and address)
MAX_ROUNDS = 64  # evaluations of one check: each knows one DNS answer more than the last


class _Unknown(Exception):
    """pyspf asked for an answer not known yet."""

    def __init__(self, name: str, qtype: str) -> None:
        super().__init__(name, qtype)
        self.name, self.qtype = name, qtype


# The answers the evaluation running now may use: set just before pyspf runs, read by
# `_lookup` (pyspf's DNSLookup) during it. Nothing awaits in between, so one is enough.
# What it asked and was not known is kept too: pyspf swallows every exception around an
# explanation's lookup (exp=), so `_Unknown` alone could go unseen.
_known: dict[tuple[str, str], Lookup] = {}
_missed: list[tuple[str, str]] = []


def _lookup(name: str, qtype: str, strict=True, timeout=None):
    """pyspf's DNSLookup: ((name, type), value) pairs, as its dnspython adapter gives."""
    key = (name.lower().rstrip("."), qtype)
    if qtype == "SPF":  # type 99: asked only in pyspf's "harsh" mode; never published now
        return []
    found = _known.get(key)
    if found is None:
        _missed.append(key)
        raise _Unknown(*key)
    if found.kind is AnswerKind.TEMPFAIL:
        raise pyspf.TempError(f"DNS {found.detail}")
    out = []
    for value in found.values:
        if qtype == "MX":
            preference, _, exchange = value.partition(" ")
            out.append(((name, qtype), (int(preference), exchange)))
        elif qtype == "TXT":
            out.append(((name, qtype), (value.encode("latin-1"),)))
        else:
            out.append(((name, qtype), value))
    return out


pyspf.DNSLookup = _lookup


class _Query(pyspf.query):
    """pyspf's query, watching which network decided a pass (see the module docstring).

    Each level of evaluation (the record, an include, a redirect) is a frame; a match of
    an address against a network records its prefix length in the current frame (the
    match ends that level's evaluation: the first match decides); a level that passes
    hands its frame's value to the level above. `ptr` matches addresses too, but proves
    nothing of a network, so its matches are not recorded.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._frames: list[list[int | None]] = []
        self._in_ptr = 0
        self.decided_prefix: int | None = None

    def check0(self, spf, recursion):
        frame: list[int | None] = [None]
        self._frames.append(frame)
        try:
            result = super().check0(spf, recursion)
        finally:
            self._frames.pop()
        if result[0] == "pass":
            if self._frames:
                self._frames[-1][0] = frame[0]
            else:
                self.decided_prefix = frame[0]
        return result

    def cidrmatch(self, ipaddrs, n):
        matched = super().cidrmatch(ipaddrs, n)
        if matched and self._frames and not self._in_ptr:
            self._frames[-1][0] = n
        return matched

    def validated_ptrs(self):
        self._in_ptr += 1
        try:
            return super().validated_ptrs()
        finally:
            self._in_ptr -= 1


@dataclass(frozen=True, slots=True)
class Evaluation:
    spf: SPF
    explanation: str  # what a fail would tell the sender (RFC 7208 section 6.2)


def evaluate(
    address: str, sender: str, helo: str, known: dict[tuple[str, str], Lookup]
) -> Evaluation:
    """One evaluation against `known` answers (raises _Unknown when one is missing): the
    MAIL FROM identity of `sender`, or HELO's when the sender is empty."""
    global _known
    _known = known
    _missed.clear()
    try:
        query = _Query(i=address, s=sender, h=helo)
        query.set_default_explanation("DEFAULT")
        result, _code, explanation = query.check()
        if _missed:
            raise _Unknown(*_missed[0])
    finally:
        _known = {}
    prefix = query.decided_prefix if result == "pass" else None
    return Evaluation(SPF(result, prefix, query.mechanism or "", ":" in address), explanation)


class SpfChecker:
    """SPF checks through one Resolver, their results cached a while."""

    def __init__(
        self,
        resolver: Resolver,
        budget: float | None = None,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.budget = budget if budget is not None else 2 * resolver.timeout
        self._results: TTLCache[SPF] = TTLCache(cache_size)
        self._clock = clock
        self.checks = 0

    async def check(self, domain: str, address: str) -> SPF:
        """The SPF result for mail from `domain` at `address` (temperror: no answer).

        A domain that publishes no SPF record gives `none` at every address: that is
        kept for the domain, so that one template sent from many hosts of a botnet under
        a domain without SPF costs one evaluation, not one per host."""
        domain = domain.lower()
        now = self._clock()
        cached = self._results.get((domain, address), now) or self._results.get((domain, ""), now)
        if cached is not None:
            return cached
        self.checks += 1
        result = (await self.run(address, f"postmaster@{domain}", domain)).spf
        if result.result != "temperror":
            key = (domain, "" if result.result == "none" else address)
            self._results.put(key, result, RESULT_TTL, self._clock())
        return result

    async def run(self, address: str, sender: str, helo: str) -> Evaluation:
        """One whole check (`evaluate`, asking what it needs), within the budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        known: dict[tuple[str, str], Lookup] = {}
        for _ in range(MAX_ROUNDS):
            try:
                return evaluate(address, sender, helo, known)
            except _Unknown as need:
                if loop.time() >= deadline:
                    return Evaluation(SPF("temperror", mechanism="the check took too long"), "")
                known[need.name, need.qtype] = await self._ask(need.name, need.qtype, deadline)
        return Evaluation(SPF("temperror", mechanism="too many lookups"), "")

    async def _ask(self, name: str, qtype: str, deadline: float) -> Lookup:
        try:
            return await self.resolver.lookup(name, qtype, deadline)
        except ValueError:  # a name no query can carry (a macro's expansion): no such name
            return Lookup(AnswerKind.NXDOMAIN, detail="not a name")
