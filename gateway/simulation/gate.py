"""One SMTP session through the real session core and Decider, with no socket: the front
door as `onajimi simulate` and `onajimi replay` drive it, on a memory store and a clock
they move themselves.

A session runs the very steps the server runs (smtp/steps.py), with the same
arguments: the connect stage, with `SimulatedConnect` carrying out its awaits
(`Decider.at_connect`, reverse DNS as a given fact with no resolver and no DNS lists, the
read ahead of the deferral record, the pregreet test when it is on); EHLO; then per
envelope MAIL with SIZE, each RCPT and the gate before DATA's 354, with
`SimulatedTransaction` carrying out their awaits: `Decider.at_rcpt` with the session's
memory of decisions; a tarpit hold waited out (`tarpit_waited`) or hung up on
(`tarpit_abandoned`, and the Decider's); a promotion (`Decider.promote`); the backend's
RCPT reply mirrored; a strike counted (`Decider.struck`, `strike_counted`). Then the end
of data and `Decider.delivered` for the familiar keys, then QUIT. The backend accepts
every recipient unless an envelope says otherwise.

A session runs to completion at one instant of the clock: a tarpit hold does not move it,
the time held is handed back (`Visit.held`). The tarpit never runs out of room (one
session at a time). No AUTH: it needs STARTTLS, which is not simulated, and a sending MTA
does not authenticate to an MX.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.assembly import session_rules_from
from gateway.config import Settings
from gateway.decider import Connect, Decider, DnsFacts, SpfCheck
from gateway.policy.decision import Policy, Verdict
from gateway.policy.facts import RDNS
from gateway.policy.keys import place_key
from gateway.policy.net import IPAddress
from gateway.policy.vocabulary import Action
from gateway.relay.reply import BackendReply
from gateway.smtp import steps
from gateway.smtp.core.notes import Decided
from gateway.smtp.session import (
    Decide,
    Deliver,
    Phase,
    RelayRcpt,
    Say,
    Session,
    Strike,
    Tarpit,
)
from gateway.store.base import Snapshot
from gateway.store.memory import MemoryStore

# Our two MX hosts: the same gateway (one store) on two addresses. A sender that falls
# back to the backup MX reaches the second one, which the deferral procedure recognises.
MX = (place_key("192.0.2.1:25"), place_key("192.0.2.2:25"))
HELO = "mta.sender.example"
CONTENT = b"Subject: simulated\r\n\r\nHello.\r\n"
BACKEND_OK = BackendReply(250, "2.0.0 Ok")
HUNG_UP = 421  # what a recipient "got" when the client hung up before its reply


def local_domain(settings: Settings) -> str:
    """A domain of ours that mail is addressed to: the first accepted domain (a
    `.example.com` entry accepts only its subdomains, so mail goes to mail.example.com)."""
    first = settings.relay.accept_domains[0].rstrip(".").lower()
    return f"mail{first}" if first.startswith(".") else first


class SimClock:
    """The clock the Decider and the store read, moved by the caller: epoch seconds."""

    __slots__ = ("now",)

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass(slots=True)
class Envelope:
    """One transaction: MAIL FROM, its RCPTs, then DATA."""

    mail_from: str  # "<>" for the null sender
    recipients: list[str]
    size: int = 0  # declared at MAIL (0: no SIZE parameter)
    refused: dict[str, BackendReply] = field(default_factory=dict)  # the backend's refusals


@dataclass(slots=True)
class Client:
    """Who connects, and how it behaves where that matters."""

    address: IPAddress
    rdns: RDNS  # given: no lookups
    helo: str = HELO
    place: str = MX[0]  # which of our MX hosts it reached
    talks_early: bool = False  # talks before the greeting (seen when pregreet is on)
    waits: bool = True  # waits a held reply out (the tarpit); False: hangs up


@dataclass(slots=True)
class Visit:
    """What one session got: a reply code per recipient of each envelope, and how it went."""

    codes: list[list[int]]
    verdicts: list[Verdict] = field(default_factory=list)  # every decision noted, in order
    penalised: bool = False  # met the penalty box (421 at the greeting or mid-session)
    held: float = 0.0  # seconds the tarpit held a reply


class Gate:
    """One configuration's front door: the session core, the Decider and a memory store
    on `clock`."""

    def __init__(
        self,
        policy: Policy,
        settings: Settings,
        clock: Callable[[], float],
        spf: SpfCheck | None = None,
    ) -> None:
        self.policy = policy
        self.rules = session_rules_from(settings)
        self.pregreet_ttl = settings.pregreet.ttl
        self.clock = clock
        self.store = MemoryStore(clock=clock)
        self.decider = Decider(lambda: policy, self.store, None, clock=clock, spf=spf)
        self.sessions = 0
        self.decisions: Counter[str] = Counter()  # "action/reason", as the metrics count

    async def sweep(self) -> None:
        """Expired records out, as a gateway sweeps them."""
        await self.store.sweep(limit=1_000_000)

    async def session(
        self, client: Client, envelopes: Sequence[Envelope], *, data: bool = True
    ) -> Visit:
        """One session carrying `envelopes` in turn. `data` False: the client quits after
        RCPT (a sender-verification callback)."""
        self.sessions += 1
        core = Session(self.policy, self.rules, f"sim{self.sessions}")
        core.connected_via(None, client.place)
        visit = Visit([])
        ahead: list[Snapshot | None] = []  # the read ahead: it serves the first decision only
        early = SimulatedConnect(self, core, client, ahead)
        greeted = await steps.connect(core, client.address, False, early)  # no DNS lists
        if isinstance(greeted, Say):  # 554 (deny list), 421 (penalty box), pregreet drop
            return self._ended(core, visit, envelopes, greeted)
        assert greeted, "a simulated session cannot time out before its greeting"
        effects = SimulatedTransaction(self, core, client, ahead, visit)
        core.hello(client.helo, esmtp=True)
        gone = False
        for envelope in envelopes:
            effects.envelope = envelope
            codes: list[int] = []
            visit.codes.append(codes)
            if gone or core.phase in (Phase.DROPPED, Phase.CLOSED):
                codes += [HUNG_UP] * len(envelope.recipients)
                continue
            if core.phase in (Phase.MAIL, Phase.RCPT):  # nothing accepted: RSET, next one
                core.reset()
            size = envelope.size
            core.mail(envelope.mail_from, [f"SIZE={size}"] if size else [], False)
            for recipient in envelope.recipients:
                if gone or core.phase in (Phase.DROPPED, Phase.CLOSED):
                    codes.append(HUNG_UP)
                    continue
                said = await steps.rcpt(core, recipient, effects)
                gone = said is None
                codes.append(HUNG_UP if said is None else _code(said.reply))
            if data and not gone and core.phase is Phase.RCPT:
                final = await self._data(core, effects)
                codes[:] = [final if code < 300 else code for code in codes]
        return self._ended(core, visit, (), None, gone=gone)

    async def _data(self, core: Session, effects: SimulatedTransaction) -> int:
        """DATA and the end of data: the reply code the accepted recipients end with."""
        out: Any = await steps.data_gate(core, effects)
        if out is None:  # 354: the message goes to the backend
            delivered = core.message(CONTENT, self.clock())
            assert isinstance(delivered, Deliver)
            out = core.delivered(BACKEND_OK, 0.0)
            if out.refresh:
                await self.decider.delivered(set(out.refresh))
            core.end_of_data()
        return _code(out.reply)

    async def _decide(self, core: Session, ask: Decide, ahead: list[Snapshot | None]) -> Any:
        transaction = core.transaction
        assert transaction is not None and core.assessment is not None
        prefetched = ahead.pop() if ahead else None
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
        self,
        core: Session,
        visit: Visit,
        unserved: Sequence[Envelope],
        said: Say | None,
        *,
        gone: bool = False,
    ) -> Visit:
        """The session is over: its decisions counted; `said` (at the connect stage)
        answers every recipient of the `unserved` envelopes."""
        for note in core.notes:
            if isinstance(note, Decided):
                verdict = note.verdict
                self.decisions[f"{verdict.action.value}/{verdict.reason.value}"] += 1
                visit.verdicts.append(verdict)
                visit.penalised = visit.penalised or verdict.action is Action.PENALTY
        core.notes.clear()
        if not gone and core.phase not in (Phase.DROPPED, Phase.CLOSED, Phase.CONNECTED):
            core.quit()
        core.ended()
        if said is not None:
            code = _code(said.reply)
            visit.codes = [[code] * len(e.recipients) for e in unserved]
        return visit


@dataclass(slots=True)
class SimulatedConnect:
    """The awaits of smtp/steps.py's connect for one simulated session: no connection
    limits, the Decider on the memory store, reverse DNS a given fact (no DNS lists), a
    client that talks early or waits for the greeting."""

    gate: Gate
    core: Session
    client: Client
    ahead: list[Snapshot | None]  # where the read ahead is kept for the first decision
    known: Snapshot | None = None  # the address key's record, read at connect

    def admit(self, address: IPAddress, exempt: bool) -> None:
        return None  # connection limits: not simulated

    async def at_connect(self) -> Connect:
        gate = self.gate
        connect = await gate.decider.at_connect(
            self.client.address, pregreet=gate.rules.greet_wait > 0
        )
        self.known = connect.snapshot
        return connect

    def now(self) -> float:
        return self.gate.clock()

    def cached_facts(self, lists: bool) -> DnsFacts:
        return DnsFacts(self.client.rdns, None)  # DNS is a given fact

    async def dns_facts(self, lists: bool) -> DnsFacts:
        return DnsFacts(self.client.rdns, None)

    def assess_later(self, lookups: Coroutine[Any, Any, None]) -> None:
        lookups.close()
        raise AssertionError("reverse DNS is always at hand in the simulator")

    async def read_ahead(self) -> None:
        assessment = self.core.assessment
        assert assessment is not None
        gate = self.gate
        prefetched, key = gate.decider.prefetch_plan(assessment, known=self.known)
        self.ahead.append(await gate.store.read(key) if key is not None else prefetched)

    def noted(self) -> None:
        pass  # the notes are read when the session ends (Gate._ended)

    async def teaser_then_wait(self, seconds: float) -> bool:
        return self.client.talks_early

    async def pregreeted(self) -> None:
        screening = self.core.screening
        assert screening is not None
        await self.gate.decider.pregreeted(screening.address_text, self.gate.pregreet_ttl)


@dataclass(slots=True)
class SimulatedTransaction:
    """The awaits of smtp/steps.py's rcpt and data_gate (TransactionEffects) for one
    simulated session's transactions: the Decider on the memory store, a backend that
    accepts (or refuses as the envelope says), a client that waits a hold out or hangs
    up."""

    gate: Gate
    core: Session
    client: Client
    ahead: list[Snapshot | None]  # the read ahead: it serves the first decision only
    visit: Visit
    envelope: Envelope | None = None  # the transaction under way

    async def decide(self, ask: Decide) -> Any:
        return await self.gate._decide(self.core, ask, self.ahead)

    async def tarpit(self, hold: Tarpit) -> Any:
        core = self.core
        if not self.client.waits:  # a bot gives up: the hang-up counts as an early retry
            key = core.tarpit_abandoned()
            if key is not None and core.screening is not None:
                await self.gate.decider.tarpit_abandoned(core.screening, key)
            return None
        self.visit.held += hold.seconds
        return core.tarpit_waited(hold.recipient)

    async def promote(self, key: str) -> None:
        await self.gate.decider.promote(key)

    async def relay_rcpt(self, ask: RelayRcpt) -> Any:
        core, envelope = self.core, self.envelope
        assert envelope is not None
        if ask.mail_first:
            core.mail_relayed(BACKEND_OK)
        return core.rcpt_relayed(ask.recipient, envelope.refused.get(ask.recipient, BACKEND_OK))

    async def strike(self, strike: Strike) -> Say:
        core = self.core
        assert core.screening is not None
        struck = await self.gate.decider.struck(core.screening, strike.reason)
        return core.strike_counted(strike, struck.count, struck.verdict)


def _code(reply: str) -> int:
    return int(reply[:3])
