"""What the SMTP adapter may use, and nothing more: built by the runtime, swapped on reload.

Sessions take the `Services` current when they connect; a reload builds a new one for
the sessions that follow. The long-lived parts (limits, open sessions, observer,
decider, backend capabilities) are the same objects in every generation.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.decider import Decider
from gateway.observer import Observer
from gateway.policy.decision import Policy
from gateway.policy.net import NetSet
from gateway.relay.backend import BackendConfig, Capabilities
from gateway.relay.pool import BackendPool
from gateway.smtp.limits import ConnectionLimits, TarpitSlots
from gateway.smtp.masquerade import MasqueradeWatch
from gateway.smtp.session import Session, SessionRules


class Connection(Protocol):
    """What the registry needs of a connection (smtp/server.py's Connection)."""

    core: Session

    def shorten_timeout(self, duration: float) -> None: ...


class OpenSessions:
    """The sessions open now: for the limits' release, stress, shutdown and `status`."""

    def __init__(self, limits: ConnectionLimits, observer: Observer) -> None:
        self.limits = limits
        self.observer = observer
        self.open: set[Connection] = set()
        self.stressed = False  # as last seen by load_changed

    def __len__(self) -> int:
        return len(self.open)

    def __iter__(self):
        return iter(list(self.open))

    def opened(self, server: Connection) -> None:
        self.open.add(server)
        self.observer.opened()

    def closed(self, server: Connection) -> None:
        if server in self.open:
            self.open.discard(server)
            self.observer.closed()
        core = server.core
        address = core.address
        if core.ended() and address is not None:
            self.limits.release(address)
            self.load_changed()

    def load_changed(self) -> None:
        """A session was admitted or released: stress begins or ends here. When it
        begins, every open session's deadline moves in too: idle connections are what
        stress is about, and they send no command that would move it."""
        stressed = self.limits.stressed
        if stressed == self.stressed:
            return
        self.stressed = stressed
        self.observer.stress(stressed, self.limits)
        if stressed:
            timeout = self.limits.command_timeout
            for server in self.open:
                server.shorten_timeout(timeout)


@dataclass(frozen=True, slots=True)
class Services:
    policy: Callable[[], Policy]  # a getter: dynamic list changes swap the policy often
    rules: SessionRules
    decider: Decider
    limits: ConnectionLimits
    sessions: OpenSessions
    observer: Observer
    backend: BackendConfig
    capabilities: Capabilities  # the backend's EHLO keywords, re-learnt by a chore
    tls_context: ssl.SSLContext | None
    proxy_trusted: NetSet[str] | None  # None: no PROXY protocol on the listeners
    max_message_size: int
    clock: Callable[[], float]
    pregreet_ttl: float = 86400.0  # pregreet.ttl: how long a pregreeter is remembered
    auth: bool = False  # auth.mode = "auto": relay AUTH when the backend offers it
    # One for the process, shared by every session (none: the tarpit has no room).
    tarpit: TarpitSlots = field(default_factory=lambda: TarpitSlots(0))
    backend_pool: BackendPool | None = None  # backend.reuse: idle connections kept
    # One for the process: the host's default gateways as clients (none: not watched).
    masquerade: MasqueradeWatch | None = None
