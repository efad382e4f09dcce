"""Concurrent-connection limits: in all, and per client address (421 at the greeting).

aiosmtpd has no limit of its own (a declined feature), so the gateway counts sessions
itself: admitted at connect (after the PROXY header, so the real client is counted),
released when the connection goes.
"""

from __future__ import annotations

from collections import Counter

from gateway.policy.net import IPAddress


class ConnectionLimits:
    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.active = 0
        self._by_client: Counter[IPAddress] = Counter()

    def admit(self, address: IPAddress, exempt: bool = False) -> str | None:
        """None when admitted (then `release` must follow); else why not."""
        if self.active >= self.total:
            return "too many connections"
        if not exempt and self._by_client[address] >= self.per_client:
            return "too many connections from your address"
        self.active += 1
        self._by_client[address] += 1
        return None

    def release(self, address: IPAddress) -> None:
        self.active -= 1
        left = self._by_client[address] - 1
        if left > 0:
            self._by_client[address] = left
        else:
            del self._by_client[address]

    def reconfigure(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
