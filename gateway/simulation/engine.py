"""The event queue and the simulated clock: a world of senders, in simulated-time order,
through the front door of gate.py (the real session core and Decider).

Each attempt of a message is one session carrying it (gate.Gate.session); a
sender-verification callback is a session that quits after RCPT. Real MTAs wait a
tarpit hold out, bots hang up (policy.suspect_action = "tarpit"): the time held counts
in the message's delay. The backend accepts everything: what is measured is the front
door. A session runs to completion at one instant of simulated time; the store is the
memory store, on the same clock, swept every simulated hour as a gateway sweeps it.

The event queue (heapq) is ordered by (time, sequence): events at the same instant run in
the order they were scheduled, so a run is repeatable.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.assembly import build_policy
from gateway.config import Settings
from gateway.policy.decision import Policy
from gateway.simulation.gate import MX, Client, Envelope, Gate, SimClock
from gateway.simulation.population import CALLBACK_LEAD, Message, Send, Sender, World
from gateway.simulation.stats import ClassFigures, RunResult

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the clock's reading at simulated second 0
SWEEP_EVERY = 3600.0


class Engine:
    """One configuration against one world of senders."""

    def __init__(self, policy: Policy, settings: Settings, world: World) -> None:
        self.min_retry_delay = settings.policy.min_retry_delay
        self.world = world
        self.clock = SimClock(START)
        self.gate = Gate(policy, settings, self.clock, spf=world)
        self.queue: list[tuple[float, int, Callable[..., Awaitable[None]], tuple[Any, ...]]] = []
        self.sequence = 0
        self.figures = {
            c.name: ClassFigures(c.name, c.bot, c.senders) for c in world.classes if c.senders
        }
        self.store_at_end: dict[str, int] = {}

    # -- the event queue -----------------------------------------------------------------
    def at(self, when: float, action: Callable[..., Awaitable[None]], *args: Any) -> None:
        heapq.heappush(self.queue, (when, self.sequence, action, args))
        self.sequence += 1

    @property
    def now(self) -> float:
        """Seconds since the start of the run."""
        return self.clock.now - START

    async def run(self, days: float) -> None:
        horizon = days * 86400.0
        for send in sorted(self.world.sends(), key=lambda s: s.when):
            self.figures[send.message.sender.cls.name].messages += 1
            if send.probe:
                self.at(max(0.0, send.when - CALLBACK_LEAD), self._probe, send)
            self.at(send.when, self._round, send.message, 0, None)
        t = SWEEP_EVERY
        while t < horizon:
            self.at(t, self._sweep)
            t += SWEEP_EVERY
        self.at(horizon, self._snapshot)
        queue = self.queue
        clock = self.clock
        while queue:
            when, _, action, args = heapq.heappop(queue)
            clock.now = START + when
            await action(*args)

    async def _sweep(self) -> None:
        await self.gate.sweep()

    async def _snapshot(self) -> None:
        self.store_at_end = await self.gate.store.counts()

    # -- what senders do -----------------------------------------------------------------
    async def _probe(self, send: Send) -> None:
        """A sender-verification callback: MAIL FROM:<> RCPT TO:<x> QUIT."""
        sender = send.message.sender
        recipients = send.message.recipients[:1]
        client = self._client(sender, sender.address(), 0)
        visit = await self.gate.session(client, [Envelope("<>", recipients)], data=False)
        figures = self.figures[sender.cls.name]
        figures.probes += 1
        if visit.codes[0][0] != 250:
            figures.probes_refused += 1

    async def _round(
        self, message: Message, mx: int, address: ipaddress.IPv4Address | None
    ) -> None:
        """One attempt of `message` at MX `mx` (0 primary, 1 backup); `address` None: the
        sender picks the address of a new round."""
        sender = message.sender
        cls = sender.cls
        figures = self.figures[cls.name]
        now = self.now
        if message.first < 0:
            message.first = now
        if address is None:
            address = sender.address()
        client = self._client(sender, address, mx)
        client.talks_early = cls.pregreet > 0 and sender.rng.random() < cls.pregreet
        mail_from = message.mail_from
        if cls.batv:  # a new tag on every try (BATV, prvs=): the same sender all the same
            mail_from = f"prvs={int(now) % 10000:04d}{sender.rng.randrange(10**6):06x}={mail_from}"
        envelope = Envelope(mail_from, message.recipients, message.size)
        visit = await self.gate.session(client, [envelope])
        (codes,) = visit.codes
        figures.attempts += 1
        figures.penalised += visit.penalised
        accepted = [r for r, code in zip(message.recipients, codes, strict=True) if code < 300]
        refused = any(code >= 500 for code in codes)
        if accepted:
            figures.accepted += 1
        message.recipients = [
            r for r, code in zip(message.recipients, codes, strict=True) if 400 <= code < 500
        ]
        if refused:
            message.lost = True
        if not message.recipients:
            if message.lost:
                figures.lost += 1
            else:
                figures.delivered += 1
                figures.delays.append(now + visit.held - message.first)
            return
        if now - message.first >= self.min_retry_delay:
            figures.late += 1
        if mx == 0 and cls.mx_fallback:
            self.at(now + cls.fallback_after, self._round, message, 1, address)
            return
        message.rounds += 1
        retry = cls.retry.next_try(
            message.first, now, message.gap, message.rounds, sender.rng, sender.phase
        )
        if retry is None:
            figures.lost += 1
            return
        when, message.gap = retry
        self.at(when, self._round, message, 0, None)

    def _client(self, sender: Sender, address: ipaddress.IPv4Address, mx: int) -> Client:
        """A sender's host as the gate meets it: real MTAs wait a tarpit hold out, bots
        hang up (taRgrey's observation)."""
        return Client(address, self.world.rdns[address], place=MX[mx], waits=not sender.cls.bot)

    def result(self, config: str, days: float, seed: int) -> RunResult:
        return RunResult(
            config=config,
            days=days,
            seed=seed,
            min_retry_delay=self.min_retry_delay,
            classes=list(self.figures.values()),
            store=dict(self.store_at_end),
            decisions=dict(self.gate.decisions),
            sessions=self.gate.sessions,
        )


def simulate(
    settings: Settings, world_of: Callable[[], World], days: float, seed: int, label: str
) -> RunResult:
    """Run one configuration over a freshly built world (`world_of` builds the same
    senders every time it is called: the messages' progress lives in them)."""
    policy = build_policy(settings)
    engine = Engine(policy, settings, world_of())
    asyncio.run(engine.run(days))
    return engine.result(label, days, seed)
