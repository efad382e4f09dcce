"""DNS block and allow lists, scored as postscreen scores them. Pure: the lookups are
resolver/dnsbl.py's.

A site is written in postscreen's syntax (`postscreen_dnsbl_sites`):

    zen.spamhaus.org=127.0.0.[2..11]*3      domain, reply filter, weight
    list.dnswl.org=127.0.[0..255].[2..3]*-5 a negative weight: an allow list
    bl.example.org                           any reply, weight 1

A filter has four parts, each a number, or `[...]` holding numbers and ranges (`n..m`)
separated by `;`. A site fires when one of its A records matches (once, however many
match); the client's score is the sum of the weights of the sites that fired. At or
above `threshold` the client is listed; at or below `allowlist_threshold` (a negative
number; 0 switches it off, as in postscreen) it is allow-listed and skips every later
test. A site that did not answer (timeout, SERVFAIL) fires neither way: a DNS failure is
never a verdict.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.policy.net import IPAddress
from gateway.policy.values import value
from gateway.policy.vocabulary import DnsblAction

_SITE = re.compile(
    r"^(?P<domain>[A-Za-z0-9_][A-Za-z0-9_.-]*?)\.?"
    r"(?:=(?P<filter>[^*]+))?"
    r"(?:\*(?P<weight>-?\d+))?$"
)
_PART = re.compile(r"^(?:\d+|\[[\d.;]+\])$")
_FILTER_PART = re.compile(r"\[[^\]]*\]|[^.\[\]]+")

Octets = tuple[frozenset[int], frozenset[int], frozenset[int], frozenset[int]]


@value
class Site:
    domain: str  # the zone asked: <reversed address>.<domain>
    filter: Octets | None  # None: any reply fires it
    weight: int
    text: str  # as configured, for logs and explain

    def fires(self, replies: tuple[str, ...]) -> tuple[str, ...]:
        """The replies that match the filter (an empty tuple: the site does not fire)."""
        if self.filter is None:
            return replies
        return tuple(r for r in replies if _matches(self.filter, r))


def _matches(octets: Octets, reply: str) -> bool:
    parts = reply.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return False
    return all(int(p) in allowed for p, allowed in zip(parts, octets, strict=True))


def _octet(part: str, text: str) -> frozenset[int]:
    if not _PART.match(part):
        raise ValueError(f"{text!r}: {part!r} is not a number or a [n..m;k] list")
    if not part.startswith("["):
        numbers = {int(part)}
    else:
        numbers = set()
        for item in part[1:-1].split(";"):
            low, dots, high = item.partition("..")
            if not low.isdigit() or (dots and not high.isdigit()) or (not dots and high):
                raise ValueError(f"{text!r}: {item!r} is not a number or n..m")
            first, last = int(low), int(high) if dots else int(low)
            if first > last:
                raise ValueError(f"{text!r}: {item!r} runs backwards")
            numbers.update(range(first, last + 1))
    if any(n > 255 for n in numbers):
        raise ValueError(f"{text!r}: {part!r} goes past 255")
    return frozenset(numbers)


def parse_site(text: str) -> Site:
    """A site of `dnsbl.sites`; ValueError says what is wrong with it."""
    match = _SITE.match(text.strip())
    if match is None or "." not in match["domain"]:
        raise ValueError(f"{text!r}: expected DOMAIN[=FILTER][*WEIGHT]")
    octets = None
    if match["filter"] is not None:
        parts = _FILTER_PART.findall(match["filter"])
        if len(parts) != 4 or ".".join(parts) != match["filter"]:
            raise ValueError(f"{text!r}: a reply filter has four parts, like 127.0.0.[2..11]")
        octets = tuple(_octet(part, text) for part in parts)
    weight = int(match["weight"]) if match["weight"] is not None else 1
    if weight == 0:
        raise ValueError(f"{text!r}: a weight of 0 makes the site count for nothing")
    return Site(match["domain"].lower(), octets, weight, text.strip())  # type: ignore[arg-type]


def query_name(address: IPAddress, domain: str) -> str:
    """`4.3.2.1.zen.spamhaus.org` for 1.2.3.4; nibbles, reversed, for IPv6."""
    if address.version == 4:
        return ".".join(reversed(str(address).split("."))) + "." + domain
    nibbles = ipaddress.IPv6Address(address).exploded.replace(":", "")
    return ".".join(reversed(nibbles)) + "." + domain


@value
class Fired:
    site: Site
    replies: tuple[str, ...]  # the matching A records (the list's return codes)


@value
class Score:
    total: int
    fired: tuple[Fired, ...] = ()
    failed: tuple[str, ...] = ()  # domains that gave no answer: they count for nothing

    def describe(self) -> str:
        """`score 3: zen.spamhaus.org=127.0.0.[2..11]*3 (127.0.0.4)`, for logs and explain."""
        fired = ", ".join(f"{f.site.text} ({' '.join(f.replies)})" for f in self.fired)
        text = f"score {self.total}" + (f": {fired}" if fired else "")
        if self.failed:
            text += f"; no answer from {', '.join(self.failed)}"
        return text


def score(sites: tuple[Site, ...], answers: Mapping[str, tuple[str, ...] | None]) -> Score:
    """The score from each domain's A records (`()`: not listed, None: no answer)."""
    total = 0
    fired: list[Fired] = []
    for site in sites:
        replies = answers.get(site.domain)
        if not replies:
            continue
        matching = site.fires(replies)
        if matching:
            total += site.weight
            fired.append(Fired(site, matching))
    failed = tuple(domain for domain, replies in answers.items() if replies is None)
    return Score(total, tuple(fired), failed)


@dataclass(frozen=True, slots=True)
class DnsblRules:
    """`[dnsbl]`."""

    sites: tuple[Site, ...] = ()
    threshold: int = 1
    allowlist_threshold: int = 0  # 0: off (postscreen's meaning); negative: on
    action: DnsblAction = DnsblAction.DEFER
    reply_names: tuple[tuple[str, str], ...] = ()  # domain -> the name replies show
    min_ttl: float = 60
    max_ttl: float = 3600

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(site.domain for site in self.sites))

    def listed(self, result: Score) -> bool:
        return bool(self.sites) and result.total >= self.threshold

    def allowlisted(self, result: Score) -> bool:
        return self.allowlist_threshold < 0 and result.total <= self.allowlist_threshold

    def shown(self, result: Score) -> str:
        """The block lists that fired, as replies name them (`reply_names` hides a
        list's private query domain, e.g. one with an access key in it)."""
        names = dict(self.reply_names)
        listed = (f.site.domain for f in result.fired if f.site.weight > 0)
        return ", ".join(dict.fromkeys(names.get(domain, domain) for domain in listed))
