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
from typing import TYPE_CHECKING

from gateway.policy.net import IPAddress
from gateway.policy.vocabulary import Limit

if TYPE_CHECKING:
    from gateway.config import LimitsSettings


class ConnectionLimits:
    """The counts, and what they imply now. `command_timeout` (seconds a session gets for
    its next command) and `junk_limit` (junk commands it may send) are plain
    attributes, read on every command, changed only when stress begins or ends."""

    def __init__(self, settings: LimitsSettings) -> None:
        self.active = 0
        self.stressed = False
        self._by_client: Counter[IPAddress] = Counter()
        self.reconfigure(settings)

    def admit(self, address: IPAddress, exempt: bool = False) -> Limit | None:
        """None when admitted (then `release` must follow); else which limit refused."""
        if self.active >= self.total:
            return Limit.CONNECTIONS
        if not exempt and self._by_client[address] >= self.per_client:
            return Limit.CLIENT_CONNECTIONS
        self.active += 1
        self._by_client[address] += 1
        if not self.stressed and self.active >= self._stress_at:
            self._stress(True)
        return None

    def release(self, address: IPAddress) -> None:
        self.active -= 1
        left = self._by_client[address] - 1
        if left > 0:
            self._by_client[address] = left
        else:
            del self._by_client[address]
        if self.stressed and self.active < self._stress_at:
            self._stress(False)

    def reconfigure(self, settings: LimitsSettings) -> None:
        self._settings = settings
        self.total = settings.max_connections
        self.per_client = settings.max_connections_per_client
        self._stress_at = max(1, math.ceil(self.total * settings.stress_threshold))
        self._stress(self.active >= self._stress_at)

    def _stress(self, stressed: bool) -> None:
        s = self._settings
        self.stressed = stressed
        self.command_timeout = s.stress_command_timeout if stressed else s.command_timeout
        self.junk_limit = s.stress_junk_commands if stressed else s.junk_commands


class TarpitSlots:
    """Sessions the tarpit holds now, against `tarpit.max_sessions`: beyond it a suspect
    gets the normal deferral at once, so the tarpit can never pin the gateway."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # set again on reload
        self.held = 0

    def take(self) -> bool:
        if self.held >= self.limit:
            return False
        self.held += 1
        return True

    def release(self) -> None:
        self.held -= 1
