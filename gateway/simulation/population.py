"""Sender classes -> sender instances: their addresses, PTR names, and what they send when.

Everything random about *what* is sent is drawn here, before the simulation starts, from
one generator per sender seeded by (seed, class, index): the same seed gives the same
mail whatever the configuration does with it, so two configurations (`--vs`) meet exactly
the same senders and messages. What happens later (retry jitter, which pool address a
retry comes from) draws from a second generator per sender, in event order.

Addresses come from 10.0.0.0/8, one /24 after another in class order. By default no two
unrelated senders share a /24; with `neighbours = N` the single hosts of every class (a
self-hosted MTA, a bot) are shuffled and packed N to a /24, as in a hosting or an access
provider's range, so what `policy.ipv4_prefix = 24` lumps together (and what one
host's penalty box shuts out) shows. DNS facts are built here too: forward-confirmed PTR names, or
NXDOMAIN for the `none` variant, and what each sender domain publishes in SPF (the
class's `spf`: its hosts, its pool's /24s, `+all` or nothing). No resolver, no socket.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

from gateway.policy.facts import RDNS, SPF, RDNSStatus
from gateway.simulation.senders import Rotate, SenderClass, Spf

NETWORK = ipaddress.IPv4Network("10.0.0.0/8")
LANE_OFFSET = 0.2  # seconds between the parallel sessions of a burst opening
LOCAL_USERS = 200  # mailboxes of ours that mail is addressed to
CALLBACK_LEAD = 1.0  # seconds between a callback probe and the message it verifies
ISPS = 20  # access and hosting providers whose generic names senders share ({isp})


class PopulationError(ValueError):
    """The population does not fit (too many addresses asked for)."""


@dataclass(slots=True)
class Message:
    """One message and where its delivery stands."""

    sender: Sender
    mail_from: str
    recipients: list[str]  # ours, still to be accepted (the first is the message's key)
    size: int  # declared at MAIL; the same on every retry
    first: float = -1.0  # when its first round began (-1: not yet)
    rounds: int = 0  # failed rounds
    gap: float = 0.0  # the retry schedule's memory (retry.py)
    lost: bool = False


@dataclass(slots=True)
class Send:
    """A message due at `when` (seconds from the start), with a callback probe first?"""

    when: float
    message: Message
    probe: bool


@dataclass(slots=True)
class Sender:
    cls: SenderClass
    index: int
    addresses: tuple[ipaddress.IPv4Address, ...]
    phase: float  # where its queue runs fall (retry.py)
    rng: random.Random  # for what happens during the run (not what is sent)
    cursor: int = 0  # the next address, for Rotate.SEQUENTIAL
    sends: list[Send] = field(default_factory=list)

    def address(self) -> ipaddress.IPv4Address:
        """The address of its next round."""
        rotate = self.cls.pool.rotate
        if rotate is Rotate.FIXED or len(self.addresses) == 1:
            return self.addresses[0]
        if rotate is Rotate.RANDOM:
            return self.addresses[self.rng.randrange(len(self.addresses))]
        address = self.addresses[self.cursor % len(self.addresses)]
        self.cursor += 1
        return address


@dataclass(frozen=True, slots=True)
class SpfRecord:
    """A sender domain's SPF: `+all`, or the networks it lists (then `-all`)."""

    plus_all: bool = False
    networks: tuple[ipaddress.IPv4Network, ...] = ()

    def check(self, address: str) -> SPF:
        if self.plus_all:
            return SPF("pass", None, "+all")
        ip = ipaddress.IPv4Address(address)
        for network in self.networks:
            if ip in network:
                return SPF("pass", network.prefixlen, f"ip4:{network}")
        return SPF("fail", None, "-all")


@dataclass(slots=True)
class World:
    """The senders of a run and the DNS facts of their addresses."""

    classes: list[SenderClass]
    senders: list[Sender]
    rdns: dict[ipaddress.IPv4Address, RDNS]
    local_domain: str
    spf: dict[str, SpfRecord] = field(default_factory=dict)  # by sender domain

    def sends(self) -> list[Send]:
        return [send for sender in self.senders for send in sender.sends]

    async def check(self, domain: str, address: str) -> SPF:
        """SPF as the gateway's checker answers it (decider.SpfCheck), from the world."""
        record = self.spf.get(domain)
        return SPF("none") if record is None else record.check(address)


def _published(cls: SenderClass, pool: tuple[ipaddress.IPv4Address, ...]) -> SpfRecord | None:
    """What a real sender's domain publishes for the addresses it sends from."""
    if cls.spf is Spf.HOST:
        return SpfRecord(networks=tuple(ipaddress.IPv4Network(a) for a in pool))
    if cls.spf is Spf.NETWORKS:
        nets = {ipaddress.IPv4Network(f"{a}/24", strict=False) for a in pool}
        return SpfRecord(networks=tuple(sorted(nets)))
    return None


class _Addresses:
    """Hands out /24s of 10.0.0.0/8 in order."""

    def __init__(self) -> None:
        self.next = 0
        self.total = NETWORK.num_addresses // 256

    def pool(self, size: int, networks: int) -> tuple[ipaddress.IPv4Address, ...]:
        networks = max(1, min(networks, size))
        if self.next + networks > self.total:
            raise PopulationError("the population needs more than the 65536 /24s of 10.0.0.0/8")
        base = int(NETWORK.network_address) + 256 * self.next
        self.next += networks
        per = -(-size // networks)  # ceil: spread evenly, a host part from .1 on
        if per > 254:
            raise PopulationError(f"{size} addresses do not fit in {networks} /24s")
        return tuple(
            ipaddress.IPv4Address(base + 256 * (i % networks) + 1 + i // networks)
            for i in range(size)
        )


def _rdns(
    cls: SenderClass, address: ipaddress.IPv4Address, index: int, domain: str, isp: str
) -> RDNS:
    template = cls.template
    if template is None:
        return RDNS(RDNSStatus.UNCONFIRMED, (), (), "NXDOMAIN")
    a, b, c, d = address.packed
    name = template.format(a=a, b=b, c=c, d=d, n=index, domain=domain, isp=isp).lower()
    return RDNS(RDNSStatus.CONFIRMED, (name,), (name,), "simulated")


def _packed(
    classes: list[SenderClass], seed: int, neighbours: int, addresses: _Addresses
) -> dict[tuple[str, int], ipaddress.IPv4Address]:
    """The single hosts of every class, shuffled and packed `neighbours` to a /24."""
    hosts = [
        (cls.name, index)
        for cls in classes
        if not cls.pool.shared and cls.pool.addresses == 1
        for index in range(cls.senders)
    ]
    random.Random(f"{seed}:neighbours").shuffle(hosts)
    networks = -(-len(hosts) // neighbours)
    block = addresses.pool(networks, networks)  # the .1 of each /24 reserved
    return {host: block[k // neighbours] + k % neighbours for k, host in enumerate(hosts)}


def build_world(
    classes: list[SenderClass], days: float, seed: int, local_domain: str, neighbours: int = 1
) -> World:
    """Every sender of every class, with its messages over `days` days (see the module
    docstring for `neighbours`)."""
    addresses = _Addresses()
    if neighbours > 254:
        raise PopulationError("neighbours: at most 254 hosts share a /24")
    packed = _packed(classes, seed, neighbours, addresses) if neighbours > 1 else {}
    rdns: dict[ipaddress.IPv4Address, RDNS] = {}
    spf: dict[str, SpfRecord] = {}
    senders: list[Sender] = []
    horizon = days * 86400.0
    for cls in classes:
        shared = None
        if cls.pool.shared and cls.senders:
            shared = addresses.pool(cls.pool.addresses, cls.pool.networks)
            for n, address in enumerate(shared):
                rdns[address] = _rdns(cls, address, n, cls.domain, f"isp{n % ISPS}.example")
        for index in range(cls.senders):
            make = random.Random(f"{seed}:{cls.name}:{index}:mail")
            domain = cls.domain or f"s{index}.{cls.family}.example"
            pool = shared
            if pool is None:
                isp = f"isp{index % ISPS}.example"
                host = packed.get((cls.name, index))
                if host is not None:
                    pool = (host,)
                else:
                    pool = addresses.pool(cls.pool.addresses, cls.pool.networks)
                for n, address in enumerate(pool):
                    rdns[address] = _rdns(cls, address, n, domain, isp)
            phase = make.uniform(0, cls.retry.queue_run)
            sequential = cls.pool.rotate is Rotate.SEQUENTIAL
            cursor = make.randrange(len(pool)) if sequential else 0
            run = random.Random(f"{seed}:{cls.name}:{index}:run")
            sender = Sender(cls, index, pool, phase, run, cursor)
            sender.sends = _sends(sender, make, horizon, domain, local_domain)
            senders.append(sender)
            published = _published(cls, pool)
            if published is not None:  # a provider's variants are one domain's pools
                known = spf.get(domain, SpfRecord())
                networks = tuple(dict.fromkeys((*known.networks, *published.networks)))
                spf[domain] = SpfRecord(networks=networks)
            elif cls.spf is Spf.PLUS_ALL:
                for send in sender.sends:
                    spf[send.message.mail_from.rpartition("@")[2]] = SpfRecord(plus_all=True)
    return World(list(classes), senders, rdns, local_domain, spf)


def _burst_times(cls: SenderClass, rng: random.Random, horizon: float) -> list[float]:
    if cls.at:
        return [t for t in cls.at if t < horizon]
    if cls.bursts:
        return sorted(rng.uniform(0, horizon) for _ in range(cls.bursts))
    if cls.bursts_per_day <= 0:
        return []
    rate = cls.bursts_per_day / 86400.0
    times, t = [], rng.expovariate(rate)
    while t < horizon:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def _sends(
    sender: Sender, rng: random.Random, horizon: float, domain: str, local_domain: str
) -> list[Send]:
    cls = sender.cls
    sends = []
    for start in _burst_times(cls, rng, horizon):
        count = rng.randint(*cls.backlog)
        for i in range(count):
            lane, turn = i % cls.parallel, i // cls.parallel
            when = start + lane * LANE_OFFSET + turn * cls.spacing
            wanted = min(rng.randint(*cls.recipients), LOCAL_USERS)
            recipients = [f"user{n}@{local_domain}" for n in rng.sample(range(LOCAL_USERS), wanted)]
            if cls.bot:  # spam: a made-up sender per message
                mail_from = f"x{rng.randrange(10**6)}@spam{rng.randrange(10**4)}.example"
            elif cls.verp:  # one message per recipient, the recipient in the sender
                local = recipients[0].replace("@", "=")
                mail_from = f"list-bounces+{local}@{domain}"
            else:
                mail_from = f"user{rng.randrange(50)}@{domain}"
            size = rng.randint(2_000, 200_000)
            probe = cls.callback > 0 and rng.random() < cls.callback
            message = Message(sender, mail_from, recipients, size)
            sends.append(Send(when, message, probe))
    return sends
