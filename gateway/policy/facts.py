"""Facts the edges hand to the policy. Plain values: the policy never fetches them.

`RDNS` is the three-way outcome of reverse DNS with forward confirmation (FCrDNS):

* CONFIRMED: at least one PTR name resolves back to the client address;
* UNCONFIRMED: no PTR, or no PTR name resolves back (S25R rule 0: a verdict);
* TEMPFAIL: a timeout or SERVFAIL got in the way: *not* a verdict; the client is told
  to try again (451 4.4.3) and nothing is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RDNSStatus(StrEnum):
    CONFIRMED = "confirmed"
    UNCONFIRMED = "unconfirmed"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class RDNS:
    status: RDNSStatus
    ptr_names: tuple[str, ...] = ()  # every PTR name seen: lower-case, no final dot
    confirmed: tuple[str, ...] = ()  # the subset whose A/AAAA contains the client address
    detail: str = ""  # why, for explain and logs: "NXDOMAIN", "SERVFAIL", "timeout", ...

    @property
    def name(self) -> str | None:
        """The name to show and key by: the first confirmed one, else the first PTR."""
        if self.confirmed:
            return self.confirmed[0]
        return self.ptr_names[0] if self.ptr_names else None

    @classmethod
    def assumed(cls, name: str) -> RDNS:
        """A name given by hand (`onajimi explain --name`), taken as forward-confirmed."""
        clean = normalize_name(name)
        return cls(RDNSStatus.CONFIRMED, (clean,), (clean,), "given with --name")


def normalize_name(name: str) -> str:
    """DNS names compare case-insensitively and a final dot means nothing to S25R rules."""
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class SPF:
    """An SPF (RFC 7208) check of one sender domain at one client address.

    `prefix` is the width of the network the pass went through, at whatever depth of
    includes and redirects it matched: an `ip4`/`ip6` mechanism's prefix length, or an
    `a`/`mx` mechanism's (32 or 128 unless written otherwise). None when the result came
    from `all`, `ptr` or `exists`, or was not a pass: those prove nothing of a network.
    """

    result: str  # pass | fail | softfail | neutral | none | permerror | temperror
    prefix: int | None = None
    mechanism: str = ""  # the top-level mechanism that decided (include:..., ip4:..., all)
    ipv6: bool = False  # the address checked was IPv6 (prefix is then out of 128)

    def describe(self) -> str:
        if self.result != "pass":
            return self.result
        width = f" /{self.prefix}" if self.prefix is not None else " (no network)"
        return f"pass by {self.mechanism or '?'}{width}"
