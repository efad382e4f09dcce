"""The event queue and the simulated clock: sessions through the real session core and
Decider, in simulated-time order.

Each SMTP session runs the calls `smtp/early.py` and `smtp/server.py` make, in their
order, with the same arguments: the connect stage (`Session.arrive`, `admission`,
`Decider.at_connect`, `connect_facts`), reverse DNS as a given fact (`rdns_known`; no
resolver), the read ahead of the deferral record (`prefetch_plan`), the pregreet test
when it is on, EHLO, MAIL with SIZE, each RCPT (`Session.rcpt`, `Decider.at_rcpt` with
the session's memory of decisions, `rcpt_decided`, the backend's 250 mirrored), DATA
(the null sender's postponed decisions first), the end of data and `Decider.delivered`
for the familiar keys, then QUIT. The backend accepts everything: what is measured is the
front door. A session runs to completion at one instant of simulated time; the store is
the memory store, on the same clock, swept every simulated hour as a gateway sweeps it.

The event queue (heapq) is ordered by (time, sequence): events at the same instant run in
the order they were scheduled, so a run is repeatable.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.assembly import build_policy
from gateway.config import Settings
from gateway.decider import Decider
from gateway.policy.decision import Policy
from gateway.policy.facts import RDNS
from gateway.policy.keys import place_key
from gateway.policy.records import Familiar
from gateway.policy.vocabulary import Action, OnError
from gateway.relay.reply import BackendReply
from gateway.simulation.population import CALLBACK_LEAD, Message, Send, World
from gateway.simulation.stats import ClassFigures, RunResult
from gateway.smtp.session import (
    Decide,
    Decided,
    Deliver,
    LookUp,
    Phase,
    RelayRcpt,
    Say,
    Session,
    SessionRules,
)
from gateway.store.memory import MemoryStore

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the clock's reading at simulated second 0
# Our two MX hosts: the same gateway (one store) on two addresses. A sender that falls
# back to the backup MX reaches the second one, which the deferral procedure recognises.
MX = (place_key("192.0.2.1:25"), place_key("192.0.2.2:25"))
HELO = "mta.sender.example"
CONTENT = b"Subject: simulated\r\n\r\nHello.\r\n"
BACKEND_OK = BackendReply(250, "2.0.0 Ok")
SWEEP_EVERY = 3600.0


class SimClock:
    """The simulated clock the Decider and the store read: seconds since the epoch."""

    __slots__ = ("now",)

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass(slots=True)
class Visit:
    """What one session got: a reply code per recipient, and how it ended."""

    codes: list[int]
    penalised: bool = False  # met the penalty box (421 at the greeting or mid-session)


def session_rules(settings: Settings) -> SessionRules:
    """The session rules a gateway with these settings runs by (as runtime.py builds them)."""
    return SessionRules(
        hostname=settings.listen.hostname,
        max_recipients=settings.limits.max_recipients,
        on_error=OnError(settings.store.on_error),
        bare_newline=settings.relay.bare_newline,
        add_received=settings.relay.add_received,
        greet_wait=settings.pregreet.greet_wait,
        pregreet_action=settings.pregreet.action,
    )


def _code(reply: str) -> int:
    return int(reply[:3])


class Engine:
    """One configuration against one world of senders."""

    def __init__(self, policy: Policy, settings: Settings, world: World) -> None:
        self.policy = policy
        self.rules = session_rules(settings)
        self.pregreet_ttl = settings.pregreet.ttl
        self.min_retry_delay = settings.policy.min_retry_delay
        self.world = world
        self.clock = SimClock()
        self.store = MemoryStore(clock=self.clock)
        self.decider = Decider(lambda: policy, self.store, None, clock=self.clock)
        self.queue: list[tuple[float, int, Callable[..., Awaitable[None]], tuple[Any, ...]]] = []
        self.sequence = 0
        self.sessions = 0
        self.decisions: Counter[str] = Counter()
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
        await self.store.sweep(limit=1_000_000)

    async def _snapshot(self) -> None:
        self.store_at_end = await self.store.counts()

    # -- what senders do -----------------------------------------------------------------
    async def _probe(self, send: Send) -> None:
        """A sender-verification callback: MAIL FROM:<> RCPT TO:<x> QUIT."""
        sender = send.message.sender
        recipients = send.message.recipients[:1]
        visit = await self.session(sender.address(), MX[0], "<>", recipients, 0, data=False)
        figures = self.figures[sender.cls.name]
        figures.probes += 1
        if visit.codes[0] != 250:
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
        talks_early = cls.pregreet > 0 and sender.rng.random() < cls.pregreet
        visit = await self.session(
            address,
            MX[mx],
            message.mail_from,
            message.recipients,
            message.size,
            talks_early=talks_early,
        )
        figures.attempts += 1
        figures.penalised += visit.penalised
        accepted = [
            r for r, code in zip(message.recipients, visit.codes, strict=True) if code < 300
        ]
        refused = any(code >= 500 for code in visit.codes)
        if accepted:
            figures.accepted += 1
        message.recipients = [
            r for r, code in zip(message.recipients, visit.codes, strict=True) if 400 <= code < 500
        ]
        if refused:
            message.lost = True
        if not message.recipients:
            if message.lost:
                figures.lost += 1
            else:
                figures.delivered += 1
                figures.delays.append(now - message.first)
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

    # -- one SMTP session ----------------------------------------------------------------
    async def session(
        self,
        address: ipaddress.IPv4Address,
        place: str,
        mail_from: str,
        recipients: list[str],
        size: int,
        *,
        data: bool = True,
        talks_early: bool = False,
    ) -> Visit:
        """One session carrying one message, through the session core and the Decider.
        `data` False: the client quits after RCPT (a sender-verification callback);
        `talks_early`: it talks before the greeting (seen only when pregreet is on)."""
        self.sessions += 1
        decider = self.decider
        core = Session(self.policy, self.rules, f"sim{self.sessions}")
        core.place = place
        core.arrive(address)
        out: Any = core.admission(None)  # connection limits: not simulated
        connect = await decider.at_connect(address, pregreet=self.rules.greet_wait > 0)
        known = connect.snapshot
        out = core.connect_facts(
            connect.screening,
            connect.verdict,
            pregreeted=connect.pregreeted,
            familiar=known is not None and isinstance(known.record, Familiar),
        )
        prefetched = None
        if isinstance(out, LookUp):
            rdns: RDNS = self.world.rdns[address]
            out = core.rdns_known(rdns)  # DNS is a given fact
            assert core.assessment is not None
            prefetched, key = decider.prefetch_plan(core.assessment, known=known)
            if key is not None:
                prefetched = await self.store.read(key)
        if isinstance(out, Say):  # 554 (deny list) or 421 (penalty box)
            return self._ended(core, len(recipients), out)
        if core.tease():  # the pregreet test is on
            said = core.greet_wait_over(talks_early)
            if talks_early:
                assert core.screening is not None
                await decider.pregreeted(core.screening.address_text, self.pregreet_ttl)
            if said is not None:
                return self._ended(core, len(recipients), said)
        core.hello(HELO, esmtp=True)
        core.mail(mail_from, [f"SIZE={size}"] if size else [], False)
        codes: list[int] = []
        for recipient in recipients:
            if core.phase in (Phase.DROPPED, Phase.CLOSED):
                codes.append(421)
                continue
            out = core.rcpt(recipient)
            if isinstance(out, Decide):
                out = core.rcpt_decided(recipient, await self._decide(core, out, prefetched))
                prefetched = None  # the read ahead serves the first decision only
            if isinstance(out, RelayRcpt):
                if out.mail_first:
                    core.mail_relayed(BACKEND_OK)
                out = core.rcpt_relayed(recipient, BACKEND_OK)
            codes.append(_code(out.reply))
        if data and core.phase is Phase.RCPT:
            out = core.data()
            while isinstance(out, Decide):
                result = await self._decide(core, out, prefetched)
                prefetched = None
                out = core.data_decided(out.recipient, result) or core.data()
            if out is None:  # 354: the message goes to the backend
                delivered = core.message(CONTENT, self.clock())
                assert isinstance(delivered, Deliver)
                out = core.delivered(BACKEND_OK, 0.0)
                if out.refresh:
                    await decider.delivered(set(out.refresh))
                core.end_of_data()
            final = _code(out.reply)
            codes = [final if code < 300 else code for code in codes]
        return self._ended(core, len(recipients), None, codes)

    async def _decide(self, core: Session, ask: Decide, prefetched) -> Any:
        transaction = core.transaction
        assert transaction is not None and core.assessment is not None
        return await self.decider.at_rcpt(
            core.assessment,
            transaction.sender,
            ask.recipient,
            dry_run=ask.dry_run,
            session=None if ask.dry_run else core.decided,
            snapshot=None if ask.dry_run else prefetched,
            place=core.place,
            size=transaction.size,
        )

    def _ended(
        self, core: Session, recipients: int, said: Say | None, codes: list[int] | None = None
    ) -> Visit:
        penalised = False
        for note in core.notes:
            if isinstance(note, Decided):
                verdict = note.verdict
                self.decisions[f"{verdict.action.value}/{verdict.reason.value}"] += 1
                penalised = penalised or verdict.action is Action.PENALTY
        core.notes.clear()
        if core.phase not in (Phase.DROPPED, Phase.CLOSED, Phase.CONNECTED):
            core.quit()
        core.ended()
        if codes is None:
            assert said is not None
            codes = [_code(said.reply)] * recipients
        return Visit(codes, penalised)

    def result(self, config: str, days: float, seed: int) -> RunResult:
        return RunResult(
            config=config,
            days=days,
            seed=seed,
            min_retry_delay=self.min_retry_delay,
            classes=list(self.figures.values()),
            store=dict(self.store_at_end),
            decisions=dict(self.decisions),
            sessions=self.sessions,
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
