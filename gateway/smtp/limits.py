"""Concurrent-connection limits: in all, and per client address (421 at the greeting).

aiosmtpd has no limit of its own (a declined feature), so the gateway counts sessions
itself: admitted at connect (after the PROXY header, so the real client is counted),
released when the connection goes.

Stress, as Postfix has it (`smtpd_timeout = ${stress?10}{300}s`): from a share of
max_connections in use on, sessions get a short command timeout and a low limit of
commands that make no progress, so idle or loitering connections cannot keep everyone
else out for the whole normal timeout.
"""

from __future__ import annotations

import math
from collections import Counter

from gateway.policy.net import IPAddress


class ConnectionLimits:
    def __init__(self, total: int, per_client: int, stress_threshold: float = 0.8) -> None:
        self.active = 0
        self._by_client: Counter[IPAddress] = Counter()
        self.reconfigure(total, per_client, stress_threshold)

    @property
    def stressed(self) -> bool:
        return self.active >= self._stress_at

    def admit(self, address: IPAddress, exempt: bool = False) -> str | None:
        """None when admitted (then `release` must follow); else which limit refused:
        "connections" or "client_connections" (the metric's label)."""
        if self.active >= self.total:
            return "connections"
        if not exempt and self._by_client[address] >= self.per_client:
            return "client_connections"
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

    def reconfigure(self, total: int, per_client: int, stress_threshold: float = 0.8) -> None:
        self.total = total
        self.per_client = per_client
        self._stress_at = max(1, math.ceil(total * stress_threshold))


REFUSALS = {
    "connections": "too many connections",
    "client_connections": "too many connections from your address",
}
