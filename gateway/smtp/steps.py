"""The order of the steps of RCPT and of the gate before DATA's 354, written once.

The session core answers each step with what must happen next: ask the Decider
(`Decide`), hold the reply (`Tarpit`), promote a key (`Promote`), ask the backend
(`RelayRcpt`), count a strike (`Strike`), or say something (`Say`). Carrying those out
means awaiting DNS, the store, the backend or a timer, which the core never does. The
front door (smtp/server.py) and the simulator (simulation/gate.py) carry them out each
its own way, behind `Effects`, and both run the steps below: a change to their order is
made here, once, and both follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gateway.smtp.session import Decide, Promote, RelayRcpt, Say, Strike, Tarpit

if TYPE_CHECKING:
    from gateway.policy.decision import RcptDecision
    from gateway.smtp.session import Session, StoreFault


class Effects(Protocol):
    """What the steps need done outside the core. Each returns what the core made of it;
    after any await the implementation checks that the session is still on (the server
    raises ConnectionResetError when it has ended meanwhile)."""

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


async def rcpt(core: Session, address: str, effects: Effects) -> Say | None:
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


async def data_gate(core: Session, effects: Effects) -> Say | None:
    """DATA before its 354: the null sender's postponed decisions, one recipient at a
    time. None: 354 may be said and the message read; else the reply to DATA."""
    out = core.data()
    while isinstance(out, Decide):
        out = core.data_decided(out.recipient, await effects.decide(out)) or core.data()
    return out
