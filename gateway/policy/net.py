"""Client addresses and longest-prefix matching over many networks.

Every address entering the policy goes through `client_address`, so an IPv4 client seen
on an IPv6 socket (`::ffff:192.0.2.1`) is the same client as on an IPv4 socket.

`NetSet` answers "which of these 100,000 networks contains this address" with one dict
lookup per distinct prefix length present (at most 33 for IPv4, 129 for IPv6, a handful
in practice), never a scan over the networks.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Generic, TypeVar

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

T = TypeVar("T")


def client_address(value: str | IPAddress) -> IPAddress:
    """Parse an address the way the policy wants it: IPv4-mapped IPv6 becomes IPv4.

    Raises ValueError for text that is not an address (a scope id `%eth0` is dropped).
    The C parser (`inet_pton`) does the work: `ipaddress` parsing costs ~15 us an address,
    too much for a step taken on every connection.
    """
    if isinstance(value, str):
        try:
            return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, value))
        except OSError:
            pass
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        text = text.split("%", 1)[0]
        try:
            address: IPAddress = ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, text))
        except OSError:
            address = ipaddress.ip_address(text)  # raises ValueError with a clear message
    else:
        address = value
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_text(address: IPAddress) -> str:
    """The address as text; the C formatter for IPv4 (str() costs ~2 us an address)."""
    if address.version == 4:
        return socket.inet_ntop(socket.AF_INET, address.packed)
    return str(address)


def mask_address(address: IPAddress, prefix: int) -> IPNetwork:
    """The network of `prefix` bits that contains `address`."""
    return ipaddress.ip_network((address, prefix), strict=False)


class NetSet(Generic[T]):
    """Networks mapped to values; `lookup` returns the value of the longest match.

    When the same network is added twice the first value is kept, so the earliest line of
    a list file is the one reported. Adding is cheap; the per-length index is rebuilt
    lazily at the next lookup, so bulk loads cost nothing extra.
    """

    __slots__ = ("_count", "_dirty", "_index", "_tables")

    def __init__(self) -> None:
        self._tables: dict[int, dict[int, dict[int, T]]] = {4: {}, 6: {}}
        self._index: dict[int, tuple[tuple[int, dict[int, T]], ...]] = {4: (), 6: ()}
        self._count = 0
        self._dirty = False

    def add(self, network: IPNetwork, value: T) -> None:
        bucket = self._tables[network.version].setdefault(network.prefixlen, {})
        key = int(network.network_address)
        if key not in bucket:
            bucket[key] = value
            self._count += 1
            self._dirty = True

    def _reindex(self) -> None:
        # Longest prefixes first; each entry carries its mask, so a lookup is one AND and
        # one dict probe per distinct prefix length.
        for version, width in ((4, 32), (6, 128)):
            full = (1 << width) - 1
            table = self._tables[version]
            self._index[version] = tuple(
                ((full << (width - n)) & full, table[n]) for n in sorted(table, reverse=True)
            )
        self._dirty = False

    def lookup(self, address: IPAddress) -> T | None:
        if not self._count:
            return None
        if self._dirty:
            self._reindex()
        value = int(address)
        for mask, bucket in self._index[address.version]:
            found = bucket.get(value & mask)
            if found is not None:
                return found
        return None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[tuple[IPNetwork, T]]:
        for version, table in self._tables.items():
            make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            for prefix, bucket in table.items():
                for key, value in bucket.items():
                    yield ipaddress.ip_network((make(key), prefix)), value
