"""One address for every client: the host's default gateway, seen as the client.

Every decision the gateway makes goes by the client's address: familiar hosts, the
penalty box and auto-bans, the per-client connection limit. Behind Docker's userland
proxy (a published port reached over IPv6, or from the host itself) or any NAT that
masquerades, every connection arrives from one address: the bridge's gateway
(172.17.0.1 on docker0, 172.28.0.1 in a compose network 172.28.0.0/16), which is this
host's default gateway. Then one bot's auto-ban bans every sender, one familiar sender
lets every bot in, and the per-client limit is shared by all: a silent disaster, with
nothing in the logs but the same address over and over. `MasqueradeWatch` says so.

What it watches, and the thresholds (the module constants):

* Only the host's default-route next hops that are not global addresses (private,
  shared CGNAT, link-local or loopback ranges: a bridge or a NAT box on the inside)
  are watched. A remote MTA is never this host's default gateway, so however busy it
  is (a provider's outbound relay may open most of a small server's connections) it is
  never counted; and on a host not behind NAT the default gateway is a router that
  sends no mail at all. That is what makes a low share safe.
* A warning when one of them opened `THRESHOLD` (50) of the last `WINDOW` (200) counted
  connections: a quarter of them, or 50 of the first 50 after a start. Docker's proxy
  often carries only part of the traffic (IPv6 clients, with IPv4 forwarded by its
  NAT rules, which keep the real source): the bridge then opens about the IPv6 share of
  the connections, a fifth to two fifths on today's internet, and that part is just as
  broken (one IPv6 bot banned bans every IPv6 sender). The only normal traffic from the
  gateway address is the host's own (a monitoring probe, the host's MTA): a quarter of
  a window of 200 is more than a few probes or a burst of cron mail. (A probe every
  minute on the published port of a server that gets fewer than about 180 other
  connections an hour is the one setup that warns without reason; such a probe belongs inside the
  container, on loopback, which is trusted.)
* At most one warning per `QUIET` (an hour): a line an operator reads, not a flood.
* Connections from `policy.trusted_networks` are not counted at all: the caller leaves
  them out (they are exempt from the per-client limit too). A bridge inside the trusted
  networks is not watched; everything from it is trusted anyway.

O(1) per connection and no allocation on it: a ring of `WINDOW` slots holding the
index of the watched address that opened each connection (-1 for any other), one count
per watched address. Whether a client is watched is asked of its address as an integer
in a set: hashing an `ipaddress` object builds a string, and comparing objects of the
two families goes through several Python-level `__eq__` calls. The whole step costs
about half a microsecond; the clock is read only when a count reaches the threshold.

`default_gateways` reads the next hops from the text of /proc/net/route and
/proc/net/ipv6_route (the runtime reads the files once, at start; without them, as off
Linux, nothing is watched). No I/O here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from gateway.policy.net import IPAddress
from gateway.policy.values import value

WINDOW = 200  # connections remembered
THRESHOLD = 50  # of them from one watched address: warn
QUIET = 3600.0  # seconds between two warnings

_RTF_UP = 0x1
_RTF_GATEWAY = 0x2
_ANY_IPV6 = "0" * 32  # ::, as /proc/net/ipv6_route writes it


@value
class Masquerade:
    """The warning: `count` of the last `window` counted connections came from `address`
    (`window` is less than `WINDOW` until that many were counted since the start)."""

    address: IPAddress
    count: int
    window: int


class MasqueradeWatch:
    """Counts, over the last `window` connections, those from each watched address."""

    __slots__ = (
        "_counts",
        "_full",
        "_next",
        "_numbers",
        "_quiet_until",
        "_ring",
        "clock",
        "gateways",
        "quiet",
        "threshold",
    )

    def __init__(
        self,
        gateways: Iterable[IPAddress],
        clock: Callable[[], float],
        *,
        window: int = WINDOW,
        threshold: int = THRESHOLD,
        quiet: float = QUIET,
    ) -> None:
        if not 0 < threshold <= window:
            raise ValueError(f"threshold {threshold} must be within 1..{window}")
        watched: list[IPAddress] = []
        for gateway in gateways:
            if not gateway.is_global and gateway not in watched:
                watched.append(gateway)
        self.gateways: tuple[IPAddress, ...] = tuple(watched)
        self._numbers = frozenset(int(gateway) for gateway in watched)  # the quick test
        self.clock = clock
        self.threshold = threshold
        self.quiet = quiet
        self._ring = [-1] * window
        self._next = 0
        self._full = False  # the ring went round once: every slot is a connection
        self._counts = [0] * len(watched)
        self._quiet_until = -float("inf")

    @property
    def window(self) -> int:
        return len(self._ring)

    def seen(self, address: IPAddress) -> Masquerade | None:
        """A counted (not trusted) connection from `address`; the warning when it is due."""
        ring, slot, counts = self._ring, self._next, self._counts
        old = ring[slot]
        if old >= 0:
            counts[old] -= 1
        if slot + 1 < len(ring):
            self._next = slot + 1
        else:
            self._next, self._full = 0, True
        gateways = self.gateways
        if int(address) not in self._numbers or address not in gateways:
            ring[slot] = -1
            return None
        index = gateways.index(address)
        ring[slot] = index
        count = counts[index] = counts[index] + 1
        if count < self.threshold:
            return None
        now = self.clock()
        if now < self._quiet_until:
            return None
        self._quiet_until = now + self.quiet
        return Masquerade(address, count, len(ring) if self._full else slot + 1)


def default_gateways(route: str = "", ipv6_route: str = "") -> list[IPAddress]:
    """The next hops of the default routes in the text of /proc/net/route (IPv4:
    destination and mask 0, the gateway in little-endian hex) and /proc/net/ipv6_route
    (::/0, the next hop in plain hex), in the order found, each once. Only routes that
    are up and go through a gateway count; lines that do not parse are skipped (a watch
    that is missing is harmless, a start that fails is not)."""
    found: list[IPAddress] = []
    for line in route.splitlines()[1:]:  # after the header line
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        try:
            flags = int(fields[3], 16)
            hop: IPAddress = ipaddress.IPv4Address(int(fields[2], 16).to_bytes(4, "little"))
        except (ValueError, OverflowError):
            continue
        if _through_gateway(flags, hop) and hop not in found:
            found.append(hop)
    for line in ipv6_route.splitlines():  # no header line
        fields = line.split()
        if len(fields) < 10 or fields[0] != _ANY_IPV6 or fields[1] != "00":
            continue
        try:
            flags = int(fields[8], 16)
            hop = ipaddress.IPv6Address(bytes.fromhex(fields[4]))
        except ValueError:
            continue
        hop = hop.ipv4_mapped or hop  # as client_address gives a client's
        if _through_gateway(flags, hop) and hop not in found:
            found.append(hop)
    return found


def _through_gateway(flags: int, hop: IPAddress) -> bool:
    return flags & (_RTF_UP | _RTF_GATEWAY) == _RTF_UP | _RTF_GATEWAY and int(hop) != 0
