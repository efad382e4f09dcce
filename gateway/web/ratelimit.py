"""Token buckets per requesting address: how often one address may ask.

A bucket holds up to `capacity` tokens and refills at `rate` per second; each request
takes one. Memory stays bounded: a bucket that has refilled to full is the same as no
bucket, so those are dropped first when there are more than `max_keys`, and when none is
full the oldest go (a flood from many addresses can then only make buckets fuller, never
emptier: it cannot lock anyone out).

IPv6 requesters are keyed by their /64: one host owns at least that much, and a bucket
per address would let it ask 2**64 times.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable


def requester_key(address: str) -> str:
    """The bucket an address draws from: the address itself, an IPv6 one's /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network((parsed, 64), strict=False))
    return str(parsed)


class TokenBuckets:
    def __init__(
        self,
        capacity: float,
        rate: float,
        *,
        max_keys: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.rate = rate  # tokens per second
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def take(self, key: str) -> float:
        """Take a token for `key`: 0.0 when granted, else the seconds until one is there."""
        now = self.clock()
        tokens = self._level(key, now)
        if tokens < 1:
            return math.ceil((1 - tokens) / self.rate * 10) / 10
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        for key in [k for k in self._buckets if self._level(k, now) >= self.capacity]:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
