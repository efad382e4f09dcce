"""The order of the steps before the greeting, of RCPT, and of the gate before DATA's
354, written once.

The session core answers each step with what must happen next: look up reverse DNS
(`LookUp`), ask the Decider (`Decide`), hold the reply (`Tarpit`), promote a key
(`Promote`), ask the backend (`RelayRcpt`), count a strike (`Strike`), or say something
(`Say`). Carrying those out means awaiting DNS, the store, the backend or a timer, which
the core never does. The front door (smtp/early.py and smtp/server.py) and the simulator
(simulation/gate.py) carry them out each its own way, behind `ConnectEffects` and
`TransactionEffects`, and both run the steps below: a change to their order is made
here, once, and both follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from gateway.policy.records import Familiar
from gateway.smtp.session import Decide, LookUp, Phase, Promote, RelayRcpt, Say, Strike, Tarpit

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from gateway.decider import Connect, DnsFacts
    from gateway.policy.decision import RcptDecision
    from gateway.policy.net import IPAddress
    from gateway.policy.vocabulary import Limit
    from gateway.smtp.session import Greet, Session, StoreFault


class ConnectEffects(Protocol):
    """What the connect stage needs done outside the core. The steps check, after each
    await, that the session is still connected (a server's session may time out while
    the store or DNS is slow)."""

    def admit(self, address: IPAddress, exempt: bool) -> Limit | None:
        """The connection limits' word on this client (`exempt`: trusted)."""

    async def at_connect(self) -> Connect | None:
        """What the store knows of this address before the greeting; None: the store
        could not answer."""

    def now(self) -> float:
        """Epoch seconds (a store outage at connect is judged by the clock)."""

    def cached_facts(self, lists: bool) -> DnsFacts | None:
        """What DNS said of a returning host, if all of it is at hand (no await)."""

    async def dns_facts(self, lists: bool) -> DnsFacts:
        """Reverse DNS (and with `lists` the DNS lists), waited for."""

    def assess_later(self, lookups: Coroutine[Any, Any, None]) -> None:
        """Run `lookups` (steps.assess) on the side, overlapping the client's EHLO and
        MAIL; RCPT waits for them if they are not done by then."""

    async def read_ahead(self) -> None:
        """Start reading (or keep at hand) the deferral record RCPT will need."""

    def noted(self) -> None:
        """The core's notes so far go to the observer."""

    async def teaser_then_wait(self, seconds: float) -> bool | None:
        """The teaser line, then `seconds`: whether the client talked meanwhile; None:
        it left (or timed out) during the wait."""

    async def pregreeted(self) -> None:
        """Remember that this client talked early (pregreet.ttl); best effort."""


class TransactionEffects(Protocol):
    """What RCPT's and DATA's steps need done outside the core. Each returns what the
    core made of it; after any await the implementation checks that the session is
    still on (the server raises ConnectionResetError when it has ended meanwhile)."""

    async def decide(self, ask: Decide) -> RcptDecision | StoreFault:
        """The Decider's verdict on one recipient (or why the store gave none)."""

    async def tarpit(self, hold: Tarpit) -> Say | Promote | None:
        """Hold the reply, then the core's next step; None: the client hung up."""

    async def promote(self, key: str) -> None:
        """Make `key` familiar (a retry earned it)."""

    async def relay_rcpt(self, ask: RelayRcpt) -> Say | Strike:
        """MAIL (once per transaction) and this RCPT at the backend; the core's answer."""

    async def strike(self, strike: Strike) -> Say:
        """Count the strike; the core's answer with the count."""


async def rcpt(core: Session, address: str, effects: TransactionEffects) -> Say | None:
    """One RCPT, every step in its order. None: the client hung up while held."""
    out: object = core.rcpt(address)
    if isinstance(out, Decide):
        out = core.rcpt_decided(address, await effects.decide(out))
    if isinstance(out, Tarpit):
        out = await effects.tarpit(out)
        if out is None:
            return None
    if isinstance(out, Promote):
        await effects.promote(out.key)
        out = out.then
    if isinstance(out, RelayRcpt):
        out = await effects.relay_rcpt(out)
    if isinstance(out, Strike):
        out = await effects.strike(out)
    assert isinstance(out, Say), out
    return out


async def data_gate(core: Session, effects: TransactionEffects) -> Say | None:
    """DATA before its 354: the null sender's postponed decisions, one recipient at a
    time. None: 354 may be said and the message read; else the reply to DATA."""
    out = core.data()
    while isinstance(out, Decide):
        out = core.data_decided(out.recipient, await effects.decide(out)) or core.data()
    return out


async def connect(
    core: Session, address: IPAddress, lists: bool, effects: ConnectEffects
) -> Say | bool:
    """Everything before the final 220, in its order, for the client at `address`
    (`lists`: DNS lists are configured). True: greet and go on; False: the session ended
    meanwhile, nothing more to say; a Say: said instead of the greeting, and the session
    ends (after a 554, once the client has had its 503s)."""
    exempt = core.arrive(address)
    out: Say | Greet | LookUp | None = core.admission(effects.admit(address, exempt))
    if out is None:
        connect = await effects.at_connect()
        if core.phase is not Phase.CONNECTED:  # timed out meanwhile: said and done
            return False
        if connect is None:
            out = core.store_down_at_connect(effects.now())
        else:
            snapshot = connect.snapshot
            out = core.connect_facts(
                connect.screening,
                connect.verdict,
                pregreeted=connect.pregreeted,
                familiar=snapshot is not None and isinstance(snapshot.record, Familiar),
            )
    if isinstance(out, LookUp):
        lists = core.asks_lists(lists)
        facts = effects.cached_facts(lists)  # a returning host's, at hand
        if facts is None and out.wait:  # a deny entry may name this client's PTR
            facts = await effects.dns_facts(lists)
            if core.phase is not Phase.CONNECTED:
                return False
        if facts is None:  # a new host: the lookups overlap the client's EHLO and MAIL
            effects.assess_later(assess(core, lists, effects))
            out = core.greet_before_rdns()
        else:
            out = core.rdns_known(facts.rdns, facts.dnsbl)
            if not isinstance(out, Say):  # refused by name: no RCPT will come
                await effects.read_ahead()
    if core.notes:
        effects.noted()
    if isinstance(out, Say):
        return out
    wait = core.greet_wait()
    if not wait:
        return True
    talked = await effects.teaser_then_wait(wait)
    if talked is None or core.phase is not Phase.GREETED:
        return False  # gone during the wait (or timed out): nothing more to say
    say = core.greet_wait_over(talked)
    if talked:
        await effects.pregreeted()
    if core.notes:
        effects.noted()
    return True if say is None else say


async def assess(core: Session, lists: bool, effects: ConnectEffects) -> None:
    """A new host's lookups after its greeting: reverse DNS (and the DNS lists), then,
    while the client is still talking, the read ahead of the record RCPT needs."""
    facts = await effects.dns_facts(lists)
    core.rdns_known(facts.rdns, facts.dnsbl)
    await effects.read_ahead()
