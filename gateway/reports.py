"""Operator reports built from store records: pure functions of (records, now, options)
(and `candidate_records`, the one read they start from).

* Whitelist candidates, the S25R rescue list: keys that were deferred and came back, but
  are not familiar yet, grouped by rDNS domain. Real mail servers retry on a schedule
  (minutes apart); bots either never come back or hammer within seconds. So keys whose
  attempts are spread out ("regular retriers") come first, each group with the
  `onajimi allow add ...` line that would rescue it.
* Blocklist export: the penalty box and the deny lists' addresses, as text a firewall
  loads, so persistent hammering is dropped before it reaches port 25.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.policy.keys import rdns_domain
from gateway.policy.net import IPNetwork, NetSet
from gateway.policy.records import Penalty, Pending, Record, Space, split_store_key
from gateway.policy.replies import human_duration

REGULAR_INTERVAL = 30.0  # mean seconds between attempts above which a retrier looks like an MTA
NO_PTR = "(no PTR name)"


@dataclass
class Candidate:
    key: str
    client: str
    ptr: str
    reason: str
    first_seen: float
    last_seen: float
    attempts: int
    early: int | None  # counted early retries; None: unknown (a penalty seen alone)
    penalised_until: float | None = None

    @property
    def mean_interval(self) -> float:
        if self.attempts < 2:
            return 0.0
        return (self.last_seen - self.first_seen) / (self.attempts - 1)

    @property
    def regular(self) -> bool:
        return self.attempts >= 2 and self.mean_interval >= REGULAR_INTERVAL


@dataclass
class CandidateGroup:
    domain: str
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def regular(self) -> bool:
        return any(c.regular for c in self.candidates)

    @property
    def attempts(self) -> int:
        return sum(c.attempts for c in self.candidates)

    @property
    def early(self) -> int:
        """The highest count of early retries (a penalty with no record beside it: the box)."""
        return max(c.early if c.early is not None else 10**6 for c in self.candidates)

    @property
    def penalised(self) -> bool:
        return all(c.penalised_until is not None for c in self.candidates)

    @property
    def last_seen(self) -> float:
        return max(c.last_seen for c in self.candidates)

    def suggested_entry(self, deny: bool = False) -> str:
        """The one list entry that would rescue (or, with `deny`, shut out) this group:
        its rDNS domain or name when every key has a confirmed one, else its addresses
        (one network when they share a /24 or /64). The administrator's page pre-fills
        its allow button with it."""
        return self._suggested(deny)[0]

    def suggestion(self, deny: bool = False) -> str:
        """The one command that would rescue (or, with `deny`, shut out) this group."""
        entry, single = self._suggested(deny)
        verb = "deny add" if deny else "allow add"
        return f"onajimi {verb} {entry}" + (" --ttl 7d" if deny and single else "")

    def _suggested(self, deny: bool) -> tuple[str, bool]:
        """(the entry, whether it is one address: a deny suggestion then expires)."""
        names = sorted({c.ptr for c in self.candidates if c.ptr})
        addresses = sorted({c.client for c in self.candidates if c.client})
        by_name = not deny and all(c.reason != "s25r_rule0" and c.ptr for c in self.candidates)
        if by_name and len(names) > 1 and self.domain != NO_PTR:
            return self.domain, False
        if by_name and names:
            return names[0], False
        if len(addresses) > 1:
            networks = {
                ipaddress.ip_network((a, 24 if ":" not in a else 64), strict=False)
                for a in addresses
            }
            if len(networks) == 1:
                return str(networks.pop()), False
        return (addresses[0] if addresses else self.candidates[0].key), True


def _domain(ptr: str) -> str:
    if not ptr:
        return NO_PTR
    return rdns_domain(ptr) or ptr


def _client_of(key: str) -> str:
    return key.split("/", 1)[0]  # triplet keys start with the client key


async def candidate_records(store) -> list[tuple[str, Record]]:
    """What `candidates` reads: deferral and penalty records (`onajimi candidates` and the
    administrator's page ask the store the same way)."""
    return await store.scan("defer:") + await store.scan("penalty:")


def candidates(
    records: Iterable[tuple[str, Record]],
    now: float,
    *,
    min_attempts: int = 2,
    since: float | None = None,
    impatient: bool = False,
    impatient_retries: int = 5,
) -> list[CandidateGroup]:
    """Group and rank deferred keys. With `impatient`: the penalty box and keys near it.

    The count that matters for impatience is `early`: counted early retries (the same
    message again before the delay, or a bot's pace), not attempts; a backlog sent in
    many sessions has many attempts and no early retries. A key in the penalty box stays
    on the rescue list, marked, after the keys that are not: a real server can be boxed
    too (messages identical in sender, recipient and size, sent every few seconds).
    """
    pendings: list[tuple[str, Pending]] = []
    penalties: dict[str, Penalty] = {}  # by address key, and by client address
    for stored, record in records:
        space, key = split_store_key(stored)
        if space is Space.PENALTY and isinstance(record, Penalty):
            penalties[key] = record
            if record.client:
                penalties.setdefault(record.client, record)
        elif space is Space.DEFER and isinstance(record, Pending):
            near_penalty = impatient_retries and record.early >= max(1, impatient_retries - 1)
            if near_penalty or not impatient:
                pendings.append((key, record))
    found: list[Candidate] = []
    boxed: set[int] = set()
    for key, record in pendings:
        # A penalty lives under the address key; a lumped or triplet key names the host
        # by its client address.
        box = penalties.get(key) or penalties.get(record.client)
        if box is not None:
            boxed.add(id(box))
        found.append(
            Candidate(
                key,
                record.client or _client_of(key),
                record.ptr,
                record.reason,
                record.first_seen,
                record.last_seen,
                record.attempts,
                record.early,
                None if box is None else box.expires,
            )
        )
    if impatient:  # penalties with no pending record beside them (it expired since)
        for key, record in list(penalties.items()):
            if id(record) in boxed:  # listed already (it is indexed twice)
                continue
            boxed.add(id(record))
            found.append(
                Candidate(
                    key,
                    record.client or key,
                    record.ptr,
                    record.reason,  # impatient, or auth_failures
                    record.since,
                    record.since,
                    record.attempts,
                    None,
                    record.expires,
                )
            )
    selected = [
        c
        for c in found
        if c.attempts >= min_attempts and (since is None or c.last_seen >= now - since)
    ]
    groups = by_domain(selected)
    if impatient:
        return sorted(groups, key=lambda g: (-g.early, -g.last_seen))
    return sorted(groups, key=lambda g: (g.penalised, not g.regular, -g.attempts, -g.last_seen))


def by_domain(found: Iterable[Candidate]) -> list[CandidateGroup]:
    """Candidates grouped by the rDNS domain of their PTR name (`onajimi replay` groups
    its own), the regular retriers first within each group."""
    groups: dict[str, CandidateGroup] = {}
    for candidate in found:
        domain = _domain(candidate.ptr)
        groups.setdefault(domain, CandidateGroup(domain)).candidates.append(candidate)
    for group in groups.values():
        group.candidates.sort(key=lambda c: (not c.regular, -c.attempts, -c.last_seen))
    return list(groups.values())


def candidates_json(groups: list[CandidateGroup], impatient: bool = False) -> list[dict]:
    return [
        {
            "domain": g.domain,
            "regular": g.regular,
            "attempts": g.attempts,
            "suggestion": g.suggestion(deny=impatient),
            "keys": [
                {
                    "key": c.key,
                    "client": c.client,
                    "ptr": c.ptr,
                    "reason": c.reason,
                    "first_seen": c.first_seen,
                    "last_seen": c.last_seen,
                    "attempts": c.attempts,
                    "early": c.early,
                    "mean_interval": round(c.mean_interval, 1),
                    "regular": c.regular,
                    "penalised_until": c.penalised_until,
                }
                for c in g.candidates
            ],
        }
        for g in groups
    ]


def candidates_text(groups: list[CandidateGroup], impatient: bool = False) -> str:
    if not groups:
        return "no candidates\n"
    stamp = lambda t: time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))  # noqa: E731
    lines = []
    for g in groups:
        kind = "regular retrier" if g.regular else "irregular"
        lines.append(f"{g.domain}  ({len(g.candidates)} key(s), {g.attempts} attempts, {kind})")
        for c in g.candidates:
            every = f"every {human_duration(c.mean_interval)}" if c.attempts > 1 else "once"
            until = f"  penalty until {stamp(c.penalised_until)}Z" if c.penalised_until else ""
            lines.append(
                f"  {c.client:<20} {c.ptr or '-':<36} {c.reason:<15} {c.attempts:>4}x {every:<15}"
                f" early {'-' if c.early is None else c.early:<3}"
                f" {stamp(c.first_seen)}Z .. {stamp(c.last_seen)}Z{until}"
            )
        lines.append(f"  suggestion: {g.suggestion(deny=impatient)}")
        lines.append("")
    return "\n".join(lines)


# -- blocklist ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Blocked:
    network: IPNetwork
    expires: float | None  # None: until removed
    source: str  # "penalty", "deny file", "dynamic deny"


def blocklist(
    penalties: Iterable[tuple[str, Record]],
    denied: Iterable[tuple[IPNetwork, float | None, str]],
    now: float,
) -> list[Blocked]:
    """Penalty-box address keys and deny-list networks, deduplicated, IPv4 first."""
    out: dict[IPNetwork, Blocked] = {}
    for stored, record in penalties:
        space, key = split_store_key(stored)
        if space is not Space.PENALTY or not isinstance(record, Penalty) or record.expires <= now:
            continue
        network = ipaddress.ip_network(key, strict=False)
        out.setdefault(network, Blocked(network, record.expires, "penalty"))
    for network, expires, source in denied:
        if expires is not None and expires <= now:
            continue
        current = out.get(network)
        if current is None or current.expires is not None:  # permanent beats temporary
            out[network] = Blocked(network, expires, source)
    return _folded(out.values())


def _folded(entries: Iterable[Blocked]) -> list[Blocked]:
    """Networks inside a broader listed one are folded into it (firewall sets refuse
    overlapping intervals); the broader entry lasts as long as the longest of them."""
    kept: dict[IPNetwork, Blocked] = {}
    covering: NetSet[IPNetwork] = NetSet()
    for entry in sorted(entries, key=lambda b: (b.network.version, b.network.prefixlen)):
        outer = covering.lookup(entry.network.network_address)
        if outer is None:
            kept[entry.network] = entry
            covering.add(entry.network, entry.network)
            continue
        held = kept[outer]
        if held.expires is not None and (entry.expires is None or entry.expires > held.expires):
            kept[outer] = Blocked(outer, entry.expires, held.source)
    return sorted(kept.values(), key=lambda b: (b.network.version, b.network))


def render_plain(entries: list[Blocked], now: float) -> str:
    return "".join(f"{_text(b.network)}\n" for b in entries)


def _text(network: IPNetwork) -> str:
    return (
        str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
    )


def _timeout(b: Blocked, now: float) -> int | None:
    return None if b.expires is None else max(1, int(b.expires - now + 0.999))


def render_nft(entries: list[Blocked], now: float, ports: Iterable[int] = (25,)) -> str:
    """An nftables table: two interval sets (elements time out with the penalty) and a
    chain dropping their SMTP traffic. Safe to load again: the table is replaced whole."""
    sets = []
    for version, name, kind in ((4, "blocklist_v4", "ipv4_addr"), (6, "blocklist_v6", "ipv6_addr")):
        elements = []
        for b in entries:
            if b.network.version == version:
                timeout = _timeout(b, now)
                elements.append(_text(b.network) + (f" timeout {timeout}s" if timeout else ""))
        body = [f"\tset {name} {{", f"\t\ttype {kind}", "\t\tflags interval, timeout"]
        if elements:
            body.append("\t\telements = { " + ",\n\t\t\t".join(elements) + " }")
        body.append("\t}")
        sets.append("\n".join(body))
    port_list = ", ".join(str(p) for p in sorted(set(ports)))
    chain = (
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter - 1; policy accept;\n"
        f"\t\ttcp dport {{ {port_list} }} ip saddr @blocklist_v4 drop\n"
        f"\t\ttcp dport {{ {port_list} }} ip6 saddr @blocklist_v6 drop\n"
        "\t}"
    )
    return (
        "# onajimi export-blocklist --format nft: load with `nft -f FILE`\n"
        "table inet onajimi\n"
        "delete table inet onajimi\n"
        "table inet onajimi {\n" + "\n".join(sets) + "\n" + chain + "\n}\n"
    )


def render_ipset(entries: list[Blocked], now: float) -> str:
    """An `ipset restore` script: new sets filled, then swapped in atomically."""
    lines = ["# onajimi export-blocklist --format ipset: load with `ipset restore < FILE`"]
    for version, name, family in ((4, "onajimi4", "inet"), (6, "onajimi6", "inet6")):
        new = f"{name}-new"
        options = f"hash:net family {family} timeout 0 maxelem 1048576 -exist"
        lines += [f"create {name} {options}", f"create {new} {options}", f"flush {new}"]
        for b in entries:
            if b.network.version == version:
                timeout = _timeout(b, now)
                lines.append(
                    f"add {new} {_text(b.network)}" + (f" timeout {timeout}" if timeout else "")
                )
        lines += [f"swap {new} {name}", f"destroy {new}"]
    return "\n".join(lines) + "\n"
