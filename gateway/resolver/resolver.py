"""Lookups, single-flight and forward-confirmed reverse DNS (FCrDNS).

The result the policy needs is an `RDNS` fact with three possible outcomes (see
gateway.policy.facts). A temporary failure (timeout, SERVFAIL, every server refusing)
must never turn into a verdict, so it is kept apart from "no name" all the way up.

Caching happens twice: each DNS answer under its own TTL (negative answers under the
SOA's negative TTL), and each client address's final RDNS outcome under the smallest TTL
that went into it. The second makes a returning client cost one dict lookup, without an
await (`cached_rdns`). Temporary failures are never cached.

Identical lookups in flight share one query (single-flight): fifty connections from one
new host at once send one PTR query, not fifty. The shared work runs as its own task, so
a client hanging up does not cancel the lookup the others are waiting for.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import dns.resolver

from gateway.errors import ConfigError
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.net import IPAddress
from gateway.resolver.cache import TTLCache
from gateway.resolver.transport import Nameserver, TransportError
from gateway.resolver.wire import (
    NOERROR,
    NXDOMAIN,
    TYPES,
    Reply,
    WireError,
    answer_to,
    reverse_name,
)

MAX_PTR_NAMES = 10  # a PTR set is attacker-controlled: bound the forward lookups it causes
NEGATIVE_TTL_DEFAULT = 60.0
NEGATIVE_TTL_MAX = 3600.0
POSITIVE_TTL_MAX = 86400.0

T = TypeVar("T")


class AnswerKind(StrEnum):
    ANSWER = "answer"
    NODATA = "nodata"
    NXDOMAIN = "nxdomain"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class Lookup:
    kind: AnswerKind
    values: tuple[str, ...] = ()
    ttl: float = 0.0
    detail: str = ""


_RCODES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED"}


def _interpret(reply: Reply, name: str, qtype: int) -> Lookup:
    """A NOERROR or NXDOMAIN reply as the outcome of one lookup."""
    negative = reply.negative_ttl
    negative = NEGATIVE_TTL_DEFAULT if negative is None else min(float(negative), NEGATIVE_TTL_MAX)
    if reply.rcode == NXDOMAIN:
        return Lookup(AnswerKind.NXDOMAIN, ttl=negative, detail="NXDOMAIN")
    found = answer_to(reply, name, qtype)
    if found is None:
        return Lookup(AnswerKind.NODATA, ttl=negative, detail="no data")
    values, ttl = found
    return Lookup(
        AnswerKind.ANSWER, tuple(str(v) for v in values), min(float(ttl), POSITIVE_TTL_MAX)
    )


class Resolver:
    """Asynchronous PTR/A/AAAA lookups against configured nameservers."""

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]],
        timeout: float = 5.0,
        cache_size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        if not nameservers:
            raise ConfigError("dns: no nameservers to ask")
        self._servers = [Nameserver(host, port) for host, port in nameservers]
        self.timeout = timeout
        self._clock = clock
        self._answers: TTLCache[Lookup] = TTLCache(cache_size)
        self._outcomes: TTLCache[RDNS] = TTLCache(cache_size)
        self._inflight: dict[Hashable, asyncio.Task] = {}
        self._observe = observe
        self.queries_sent = 0

    @classmethod
    def from_settings(cls, dns_settings, **kwargs) -> Resolver:
        servers = [(ns.host, ns.port) for ns in dns_settings.nameservers] or system_nameservers()
        return cls(servers, dns_settings.timeout, dns_settings.cache_size, **kwargs)

    @property
    def nameservers(self) -> list[tuple[str, int]]:
        return [(s.host, s.port) for s in self._servers]

    def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in self._inflight.values():
            task.cancel()

    async def _shared(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        return await asyncio.shield(self._task(key, work))

    def _task(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> asyncio.Task:
        """The lookup in flight for `key`, started now if none is."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._inflight[key] = task
            task.add_done_callback(lambda _t, k=key: self._inflight.pop(k, None))
        return task

    # -- single lookups -----------------------------------------------------------------
    async def lookup(self, name: str, rdtype: str, deadline: float | None = None) -> Lookup:
        """One cached, single-flight lookup. `deadline` is on the event loop's clock."""
        key = (name.lower().rstrip("."), rdtype)
        cached = self._answers.get(key, self._clock())
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.timeout
        return await self._shared(key, lambda: self._lookup_uncached(key, deadline))

    def start(self, name: str, rdtype: str, deadline: float) -> Lookup | asyncio.Task:
        """A lookup's answer if cached, else the lookup started (shared, single-flight):
        several lookups go out together this way, without a task of their own each."""
        key = (name.lower().rstrip("."), rdtype)
        cached = self._answers.get(key, self._clock())
        if cached is not None:
            return cached
        return self._task(key, lambda: self._lookup_uncached(key, deadline))

    async def _lookup_uncached(self, key: tuple[str, str], deadline: float) -> Lookup:
        name, rdtype = key
        qtype = TYPES[rdtype]
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt_timeout = max(0.2, self.timeout / 3)
        count = len(self._servers)
        hard_failures = 0  # answers that were not timeouts: no use waiting out the deadline
        detail = "timeout"
        attempt = 0
        result: Lookup | None = None
        while hard_failures < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            server = self._servers[attempt % count]
            attempt += 1
            self.queries_sent += 1
            try:
                reply = await server.query(name, qtype, min(attempt_timeout, remaining))
            except TransportError as exc:
                detail = str(exc)
                if detail != "timeout":
                    hard_failures += 1
                continue
            if reply.rcode in (NOERROR, NXDOMAIN):
                try:
                    result = _interpret(reply, name, qtype)
                    break
                except WireError as exc:  # a CNAME loop and the like
                    detail = f"unusable reply: {exc}"
            else:
                detail = _RCODES.get(reply.rcode, f"rcode {reply.rcode}")
            hard_failures += 1
            result = None
        if self._observe is not None:
            self._observe(loop.time() - started)
        if result is None:
            return Lookup(AnswerKind.TEMPFAIL, detail=f"{name} {rdtype}: {detail}")
        self._answers.put(key, result, result.ttl, self._clock())
        return result

    # -- FCrDNS ---------------------------------------------------------------------------
    def cached_rdns(self, address: IPAddress) -> RDNS | None:
        """The outcome for a recently seen address, without awaiting anything."""
        return self._outcomes.get(address, self._clock())

    async def rdns(self, address: IPAddress) -> RDNS:
        """Forward-confirmed reverse DNS. Not single-flight itself: its PTR and A lookups
        are, which is what spares the nameserver when one host opens many sessions."""
        cached = self._outcomes.get(address, self._clock())
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        ptr = await self.lookup(reverse_name(str(address)), "PTR", deadline)
        if ptr.kind is AnswerKind.TEMPFAIL:
            return RDNS(RDNSStatus.TEMPFAIL, detail=f"PTR lookup failed: {ptr.detail}")
        if ptr.kind is not AnswerKind.ANSWER or not ptr.values:
            outcome = RDNS(RDNSStatus.UNCONFIRMED, detail=f"no PTR record ({ptr.detail})")
            self._outcomes.put(address, outcome, ptr.ttl, self._clock())
            return outcome

        names = tuple(dict.fromkeys(v for v in ptr.values if v))[:MAX_PTR_NAMES]
        rdtype = "A" if address.version == 4 else "AAAA"
        if len(names) == 1:  # the usual case: no gather (a task per name) needed
            forward = [await self.lookup(names[0], rdtype, deadline)]
        else:
            forward = await asyncio.gather(*(self.lookup(n, rdtype, deadline) for n in names))
        confirmed = tuple(
            name
            for name, result in zip(names, forward, strict=True)
            if result.kind is AnswerKind.ANSWER and _contains(result.values, address)
        )
        ttl = min([ptr.ttl] + [r.ttl for r in forward if r.kind is not AnswerKind.TEMPFAIL])
        if confirmed:
            outcome = RDNS(RDNSStatus.CONFIRMED, names, confirmed, "forward-confirmed")
        else:
            failed = [r for r in forward if r.kind is AnswerKind.TEMPFAIL]
            if failed:
                return RDNS(
                    RDNSStatus.TEMPFAIL, names, (), f"forward lookup failed: {failed[0].detail}"
                )
            outcome = RDNS(
                RDNSStatus.UNCONFIRMED,
                names,
                (),
                f"no {rdtype} record of {names[0]} contains {address}",
            )
        self._outcomes.put(address, outcome, ttl, self._clock())
        return outcome


def _contains(values: tuple[str, ...], address: IPAddress) -> bool:
    for value in values:
        try:
            if ipaddress.ip_address(value) == address:
                return True
        except ValueError:
            continue
    return False


def system_nameservers() -> list[tuple[str, int]]:
    """The nameservers of /etc/resolv.conf, for `dns.nameservers = []`."""
    try:
        system = dns.resolver.Resolver(configure=True)
    except (dns.resolver.NoResolverConfiguration, OSError) as exc:
        raise ConfigError(
            f"dns.nameservers is empty and the system resolver configuration is unusable: {exc}"
        ) from None
    servers: list[tuple[str, int]] = []
    for ns in system.nameservers:
        if isinstance(ns, str):
            servers.append((ns, system.port))
        else:  # dns.nameserver.Do53Nameserver and friends
            address = getattr(ns, "address", None)
            if address is not None:
                servers.append((address, getattr(ns, "port", 53)))
    if not servers:
        raise ConfigError("dns.nameservers is empty and /etc/resolv.conf names no nameserver")
    return servers
