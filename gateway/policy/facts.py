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
