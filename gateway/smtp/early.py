"""Before the greeting: the PROXY header, the connect stage, and a refused session.

The stage decides nothing itself, nor the order of its steps: the session core decides
(limits, deny list, penalty box, whether reverse DNS must come first) and
`steps.connect` orders; `EarlyStage` performs what they ask for (`ConnectEffects`). The
PTR lookup starts here, so that for a new host it overlaps the client's EHLO and MAIL
(a returning host's is in the resolver's cache and costs nothing), and so does the read
ahead of the deferral record RCPT will need.

aiosmtpd has no connect hook: `GatewaySMTP._handle_client` (server.py) calls
`connect_stage` before aiosmtpd's own greeting, or the PROXY hook does once the real
client is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from aiosmtpd.smtp import SMTP

from gateway.decider import Connect, DnsFacts
from gateway.errors import StoreError
from gateway.policy import replies
from gateway.policy.keys import place_key
from gateway.policy.net import IPAddress, client_address
from gateway.policy.vocabulary import Limit
from gateway.smtp import steps
from gateway.smtp.proxy import proxied_client
from gateway.smtp.services import Services
from gateway.smtp.session import Phase, Say, Session, Then
from gateway.store.base import Snapshot

log = logging.getLogger("onajimi.smtp")

PROXY_HEADER_TIMEOUT = 5.0  # seconds a load balancer gets to send its PROXY header


class ReadAhead:
    """What the connect stage started for later stages: one slot on the session object
    (see GatewaySMTP.__init__ on why sessions keep few attributes)."""

    __slots__ = ("assessment_task", "connect_snapshot", "snapshot", "snapshot_task")

    def __init__(self) -> None:
        self.connect_snapshot: Snapshot | None = None  # the address key's record, at connect
        self.assessment_task: asyncio.Task[None] | None = None  # DNS, started at connect
        self.snapshot_task: asyncio.Task[Snapshot | None] | None = None  # deferral record
        self.snapshot: Snapshot | None = None  # the deferral record, when it was at hand


class EarlyStage(SMTP):
    """The part of the aiosmtpd adapter that runs before the greeting."""

    services: Services
    core: Session
    ahead: ReadAhead

    async def connect_stage(self, address: IPAddress) -> bool:
        """Everything before the greeting. False: the session ends here (said and done)."""
        try:
            return await self._connect_stage(address)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: internal error before the greeting", self.core.id)
            await self.push(replies.internal_error_before_greeting(self.core.rules.hostname))
            return False

    async def _connect_stage(self, address: IPAddress) -> bool:
        out = await steps.connect(self.core, address, self.services.decider.asks_lists, self)
        if isinstance(out, Say):
            await self._say_before_greeting(out)
            return False
        return out

    # -- the awaits of smtp/steps.py's connect (ConnectEffects) ----------------------------
    def admit(self, address: IPAddress, exempt: bool) -> Limit | None:
        """The connection limits; an address that is our own bridge's is reported first."""
        services = self.services
        watch = services.masquerade
        if watch is not None and not exempt:  # the real client: after PROXY, the proxied one
            masquerade = watch.seen(address)
            if masquerade is not None:
                services.observer.masquerading(masquerade)
        return services.limits.admit(address, exempt)

    async def at_connect(self) -> Connect | None:
        services, core = self.services, self.core
        assert core.address is not None
        services.sessions.load_changed()  # admitted: one more session counts
        try:
            connect = await services.decider.at_connect(
                core.address, pregreet=core.rules.greet_wait > 0
            )
        except StoreError:
            return None
        self.ahead.connect_snapshot = connect.snapshot
        return connect

    def now(self) -> float:
        return self.services.clock()

    def cached_facts(self, lists: bool) -> DnsFacts | None:
        assert self.core.address is not None
        return self.services.decider.cached_facts(self.core.address, lists)

    async def dns_facts(self, lists: bool) -> DnsFacts:
        assert self.core.address is not None
        return await self.services.decider.dns_facts(self.core.address, lists)

    def assess_later(self, lookups: Coroutine[Any, Any, None]) -> None:
        self.ahead.assessment_task = self.loop.create_task(lookups)

    async def read_ahead(self) -> None:
        self.plan_snapshot()

    def noted(self) -> None:
        self.services.observer.noted(self.core)

    async def teaser_then_wait(self, seconds: float) -> bool | None:
        """postscreen's pregreet test: the first line of a two-line greeting, then
        `seconds`. An SMTP client must wait for the final `220`; a bot that talks first
        has shown itself. StreamReader has no peek: whether anything arrived is read off
        its buffer, which aiosmtpd's command loop then reads as usual."""
        await self.push(replies.pregreet_teaser(self.core.rules.hostname))
        # The wait is ours, not the client's: no command (nor PROXY header) timeout in it.
        self._set_deadline(
            max(self._deadline, self.loop.time() + seconds + self.services.limits.command_timeout)
        )
        await asyncio.sleep(seconds)
        if self._reader.at_eof():
            return None
        return bool(self._reader._buffer)

    async def pregreeted(self) -> None:
        screening = self.core.screening
        assert screening is not None
        with contextlib.suppress(StoreError):  # not remembered: waits again next time
            await self.services.decider.pregreeted(
                screening.address_text, self.services.pregreet_ttl
            )

    def plan_snapshot(self) -> None:
        """The deferral record for RCPT: at hand already, or read ahead in a task."""
        assessment = self.core.assessment
        assert assessment is not None
        decider = self.services.decider
        ahead = self.ahead
        snapshot, key = decider.prefetch_plan(assessment, known=ahead.connect_snapshot)
        if key is None:
            ahead.snapshot = snapshot
        else:
            ahead.snapshot_task = self.loop.create_task(decider.store.read(key))

    async def _say_before_greeting(self, say: Say) -> None:
        """A 421 (and close), or a 554 greeting and then 503 to everything until QUIT."""
        await self.push(say.reply)
        while say.then is not Then.CLOSE and self.core.phase is Phase.REFUSED:
            try:
                line = await self._reader.readuntil()
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            say = self.core.refused_command(line)
            await self.push(say.reply)

    async def proxy_received(self, proxy_data: Any) -> bool:
        """The PROXY hook: is the header from a trusted balancer, and who is the client?"""
        core, trusted = self.core, self.services.proxy_trusted
        peer = self.session.peer
        balancer = client_address(peer[0]) if peer else None
        if balancer is None or trusted is None or trusted.lookup(balancer) is None:
            log.warning("PROXY header from untrusted %s refused (listen.proxy_trusted)", balancer)
            return False
        client = proxied_client(proxy_data, balancer)
        if client.address is None:
            log.warning("PROXY header from %s refused: %s", balancer, client.refusal)
            await self.push(replies.proxy_refused(core.rules.hostname, client.refusal))
            return False
        # The address the client reached, not the balancer's own.
        core.connected_via(
            client.port, place_key(client.destination) if client.destination else None
        )
        return await self.connect_stage(client.address)
