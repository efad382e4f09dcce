"""Feeds the pure policy with facts from DNS and the store, at the moments they are needed.

The SMTP session and `onajimi explain` go through these same calls, so what explain
prints is what the gateway does. `dry_run=True` reads the store but never writes it.

    at_connect(address)                 before the greeting: trusted / deny / penalty / allow
    dns_facts(address, lists)           reverse DNS and the DNS lists' score, in parallel
    assess(screening)                   once reverse DNS answers (or was given)
    at_rcpt(assessment, sender, rcpt)   relay check, then the deferral procedure (the caller
                                        has already checked the address syntax), then, for
                                        a deferred message, the proof of a pool (proof.py)
    delivered(keys)                     the backend accepted: refresh the familiar records
    struck(screening, reason)           a strike (failed AUTH, relay attempt, ...): count it,
                                        the penalty box at its limit
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from gateway.policy import deferral, dnsbl, rcpt, strikes
from gateway.policy.decision import (
    Assessment,
    Policy,
    RcptDecision,
    Remember,
    Screening,
    SessionDecisions,
    Verdict,
)
from gateway.policy.facts import RDNS, SPF
from gateway.policy.net import IPAddress
from gateway.policy.records import (
    Penalty,
    Pool,
    Pregreet,
    Record,
    Space,
    Strikes,
    store_key,
)
from gateway.policy.values import value
from gateway.policy.vocabulary import KeyMode, Reason
from gateway.resolver.cache import TTLCache
from gateway.resolver.dnsbl import DnsblLookups
from gateway.resolver.resolver import Resolver
from gateway.resolver.spf import SpfChecker
from gateway.store.base import Outcome, Snapshot, Store


@value
class Connect:
    screening: Screening
    verdict: Verdict | None  # None: nothing decided before DNS (the usual case)
    penalty: Penalty | None = None
    snapshot: Snapshot | None = None  # the deferral record under the address key, read along
    pregreeted: bool = False  # talked before the greeting recently (a live Pregreet record)


@value
class DnsFacts:
    """What DNS says about a client: its reverse DNS, and the DNS lists' score (None
    when none were asked)."""

    rdns: RDNS
    dnsbl: dnsbl.Score | None


@value
class StrikeCount:
    """A strike counted: how many for its reason are live now, and the penalty box's
    verdict when that was one too many."""

    count: int
    verdict: Verdict | None


class SpfCheck(Protocol):
    """What the proof of a pool asks (resolver/spf.py; the simulator has its own)."""

    async def check(self, domain: str, address: str) -> SPF: ...


_defer_key = rcpt.defer_key
MAX_ROUNDS = 8  # facts one RCPT decision may ask for (a first contact asks three)
POOL_CACHE_TTL = 60.0  # seconds a sender domain's pool record (or its absence) is reused
POOL_CACHE_SIZE = 10_000


class Decider:
    def __init__(
        self,
        policy: Callable[[], Policy],
        store: Store,
        resolver: Resolver | None,
        clock: Callable[[], float] = time.time,
        spf: SpfCheck | None = None,
    ) -> None:
        self._policy = policy  # a getter: reloads swap the policy between connections
        self.store = store
        self.resolver = resolver
        self.lists = DnsblLookups(resolver) if resolver is not None else None
        self.clock = clock
        if spf is None and resolver is not None:
            spf = SpfChecker(resolver)
        self.spf = spf  # None: no SPF, so no pool is ever proven (only one name is)
        self._pools: TTLCache[tuple[Record | None]] = TTLCache(POOL_CACHE_SIZE)

    @property
    def policy(self) -> Policy:
        return self._policy()

    async def at_connect(self, address: IPAddress, pregreet: bool = False) -> Connect:
        """`pregreet`: the pregreet test is on, so its record is read along."""
        policy = self._policy()
        screening = policy.screen(address)
        early = screening.verdict
        if early is not None and early.reason in (Reason.TRUSTED, Reason.DENYLIST):
            return Connect(screening, early)
        # The penalty record, and (for the RCPT stage, in the same round trip) the deferral
        # record under the address key, which is the client key unless rDNS lumping applies.
        key = screening.address_key
        keys = [store_key(Space.PENALTY, key), _defer_key(key)]
        if pregreet:  # by exact address, as postscreen: never a whole /64 for one bot
            keys.append(store_key(Space.PREGREET, screening.address_text))
        reads = await self.store.read_many(keys)
        penalty = reads[0].record if isinstance(reads[0].record, Penalty) else None
        verdict = policy.before_greeting(screening, penalty, self.clock())
        pregreeted = pregreet and isinstance(reads[2].record, Pregreet)
        return Connect(screening, verdict, penalty, reads[1], pregreeted)

    async def pregreeted(self, address: str, ttl: float) -> None:
        """Remember a pregreeter for `ttl` seconds (pregreet.ttl), by its exact address."""
        now = self.clock()
        await self.store.put(store_key(Space.PREGREET, address), Pregreet(now, now + ttl))

    async def struck(self, screening: Screening, reason: Reason) -> StrikeCount:
        """Count a strike for `reason` (policy/strikes.py) under the client's address key;
        at the reason's limit the penalty box is written too, and its verdict returned."""
        policy = self._policy()
        limit = policy.strike_rules.of(reason)
        trusted = screening.verdict is not None and screening.verdict.reason is Reason.TRUSTED
        if not limit.limit or trusted:  # trusted networks: never in the box, nor its exports
            return StrikeCount(0, None)
        now = self.clock()

        def count(record) -> Outcome[strikes.Counted]:
            live = record if isinstance(record, Strikes) else None
            counted = strikes.struck(live, now, limit, reason, screening.address_text)
            return Outcome(counted, True, counted.record)

        key = screening.address_key
        counted = await self.store.update(store_key(Space.STRIKES, f"{key}/{reason.value}"), count)
        if counted.penalty is None:
            return StrikeCount(counted.record.count, None)
        await self.store.put(store_key(Space.PENALTY, key), counted.penalty)
        return StrikeCount(
            counted.record.count, policy.before_greeting(screening, counted.penalty, now)
        )

    async def promote(self, key: str) -> None:
        """A suspect waited out the tarpit (suspect_action = "tarpit"): familiar now."""
        familiar = deferral.promoted(self.clock(), self._policy().rules)
        await self.store.put(_defer_key(key), familiar)

    async def tarpit_abandoned(self, screening: Screening, key: str) -> None:
        """A suspect hung up in the tarpit: an early retry on its key's pending record
        (and the penalty box, at policy.impatient_retries)."""
        now = self.clock()
        rules = self._policy().rules

        def count(record) -> Outcome[deferral.Step | None]:
            step = deferral.abandoned(record, now, rules)
            return Outcome(step, step is not None, step.record if step else record)

        step = await self.store.update(_defer_key(key), count)
        if step is not None and step.penalty is not None:
            await self.store.put(store_key(Space.PENALTY, screening.address_key), step.penalty)

    async def lookup(self, address: IPAddress) -> RDNS:
        assert self.resolver is not None, "no resolver: give the RDNS fact explicitly"
        return await self.resolver.rdns(address)

    @property
    def asks_lists(self) -> bool:
        """Whether DNS lists are configured (and there is a resolver to ask them)."""
        return self.lists is not None and bool(self._policy().dnsbl_rules.sites)

    async def dns_facts(self, address: IPAddress, lists: bool) -> DnsFacts:
        """Reverse DNS and, with `lists`, the DNS lists' score: asked at once, in
        parallel (a client that needs no answer, a familiar one, is not asked about)."""
        if not lists:
            return DnsFacts(await self.lookup(address), None)
        assert self.lists is not None
        asked = self.lists.ask(address, self._policy().dnsbl_rules)  # on their way now
        rdns = await self.lookup(address)
        score = asked if isinstance(asked, dnsbl.Score) else await asked.score()
        return DnsFacts(rdns, score)

    def cached_facts(self, address: IPAddress, lists: bool) -> DnsFacts | None:
        """What a returning host's DNS said, if all of it is at hand (no await)."""
        rdns = self.cached_rdns(address)
        if rdns is None or not lists:
            return None if rdns is None else DnsFacts(rdns, None)
        assert self.lists is not None
        score = self.lists.cached(address, self._policy().dnsbl_rules)
        return None if score is None else DnsFacts(rdns, score)

    async def assess(self, screening: Screening, rdns: RDNS | None = None) -> Assessment:
        """The assessment `onajimi explain` and the benchmarks use: every DNS fact asked
        (the DNS lists too), unless the address settles it or `rdns` is given."""
        policy = self._policy()
        if screening.verdict is not None:
            return policy.assess(screening, rdns)
        lists = self.asks_lists
        if rdns is None:
            facts = await self.dns_facts(screening.address, lists)
            return policy.assess(screening, facts.rdns, facts.dnsbl)
        score = None
        if lists:
            assert self.lists is not None
            score = await self.lists.score(screening.address, policy.dnsbl_rules)
        return policy.assess(screening, rdns, score)

    def cached_rdns(self, address: IPAddress) -> RDNS | None:
        """The client's reverse DNS if the resolver has it (a returning host), else None."""
        return None if self.resolver is None else self.resolver.cached_rdns(address)

    def prefetch_plan(
        self, assessment: Assessment, known: Snapshot | None = None
    ) -> tuple[Snapshot | None, str | None]:
        """What the RCPT decision will start from: (a snapshot already at hand, a key to
        read ahead). The read happens while the client is still busy with EHLO and MAIL,
        so the decision then costs one store round trip, not two. `known` is the connect
        stage's read under the address key, reused when the client key turned out to be
        the address key (no lumping). A store whose updates gain nothing from a read
        ahead (see Store.prefetch_saves_trips) is not asked again."""
        if assessment.verdict is not None or self._policy().key_mode is KeyMode.TRIPLET:
            return None, None
        if known is not None and assessment.client_key == assessment.screening.address_key:
            return known, None
        if not self.store.prefetch_saves_trips:
            return None, None
        return None, _defer_key(assessment.client_key)

    async def at_rcpt(
        self,
        assessment: Assessment,
        sender: str,
        recipient: str,
        *,
        dry_run: bool = False,
        session: SessionDecisions | None = None,
        snapshot: Snapshot | None = None,
        place: str = "",
        size: int | None = None,
    ) -> RcptDecision:
        """The RCPT-stage decision (policy/rcpt.py decides; this reads what it asks for
        and applies the writes it leaves). `session` holds the decisions of one SMTP
        session by key: three recipients of one message are one attempt, not two early
        retries, and a later transaction is known as one (SessionDecisions). It is only
        read here: what the session should keep comes back in the decision's `remember`,
        and the session core keeps it.
        `snapshot` is a read ahead of the client key's record (see `prefetch_plan`).
        `place` names the listening address the client reached (see keys.place_key):
        the same message at another of our MX hosts at once is the sender's fallback.
        `size` is the SIZE the client declared at MAIL (part of the message's identity).
        A dry run reads and asks as the real decision would, and writes nothing."""
        policy = self._policy()
        facts = rcpt.Facts(
            assessment,
            sender,
            recipient,
            self.clock(),
            place,
            size,
            session,
            spf=self.spf is not None,
            dry_run=dry_run,
            ahead=rcpt.UNREAD if snapshot is None else snapshot.record,
        )
        for _ in range(MAX_ROUNDS):
            out = rcpt.decide(policy, facts)
            if isinstance(out, rcpt.Ruling):
                if not dry_run:
                    await self._apply(out.writes)
                if session is not None and out.remember is not None:
                    assert out.attempt is not None  # the session core keeps it
                    memo = Remember(out.key, out.remember, out.attempt)
                    return replace(out.decision, remember=memo)
                return out.decision
            facts = await self._fetch(out, facts, snapshot)
        raise AssertionError(f"the RCPT decision asked for more than {MAX_ROUNDS} facts")

    async def _fetch(self, need: rcpt.Need, facts: rcpt.Facts, snapshot: Snapshot | None):
        """The fact `need` names, added to `facts`."""
        store = self.store
        facts.prepared = need.prepared
        if isinstance(need, rcpt.ReadClient):
            facts.client = await store.get(need.key)
        elif isinstance(need, rcpt.UpdateKey):
            if facts.dry_run:
                facts.record = await store.get(need.key)
                facts.step = need.change(facts.record)
                return facts

            def change(record) -> Outcome[deferral.Step]:
                step = need.change(record)
                return Outcome(step, step.changed, step.record)

            hint = snapshot if need.snapshot else None
            updated = store.update(need.key, change, snapshot=hint)
            if need.proof is None:
                facts.step = await updated
            else:  # a first deferral: its trace claimed in the same batch (SQLite) or at once
                facts.step, (facts.trace, facts.pool) = await asyncio.gather(
                    updated, self._proof_reads(need.proof)
                )
        elif isinstance(need, rcpt.ReadProof):
            facts.trace, facts.pool = await self._proof_reads(need, facts.dry_run)
        else:
            assert self.spf is not None
            facts.checked[need.address] = await self.spf.check(need.domain, need.address)
        return facts

    async def _proof_reads(self, need: rcpt.ReadProof, dry_run: bool = False):
        """(the live trace, the pool record): the trace claimed, unless a dry run. Pool
        records are read through a short in-process cache: most first deferrals come
        from domains no one has proven, and asking the store each time would double a
        first contact's store work for nothing (another process's proof is seen here
        within POOL_CACHE_TTL)."""
        store = self.store
        trace = store.get(need.trace_key) if dry_run else store.claim(need.trace_key, need.trace)
        if need.pool_key is None:
            return await trace, None
        now = time.monotonic()
        cached = self._pools.get(need.pool_key, now)
        if cached is not None:
            return await trace, cached[0]
        found, pool = await asyncio.gather(trace, store.get(need.pool_key))
        self._pools.put(need.pool_key, (pool,), POOL_CACHE_TTL, now)
        return found, pool

    async def _apply(self, writes: tuple[rcpt.Put | rcpt.Change, ...]) -> None:
        for write in writes:
            if isinstance(write, rcpt.Put):
                await self.store.put(write.key, write.record)
                if isinstance(write.record, Pool):  # this process's own proof: seen at once
                    self._pools.put(write.key, (write.record,), POOL_CACHE_TTL, time.monotonic())
                continue

            def change(record, write=write) -> Outcome[None]:
                new = write.change(record)
                return Outcome(None, new is not None, new)

            await self.store.update(write.key, change)

    async def delivered(self, keys: set[str]) -> None:
        """The backend accepted a delivery: familiar keys involved stay familiar longer."""
        now = self.clock()
        rules = self._policy().rules

        def refresh(record) -> Outcome[None]:
            new = deferral.on_delivery(record, now, rules)
            return Outcome(None, new is not None, new)

        for key in keys:
            await self.store.update(_defer_key(key), refresh)
